#!/usr/bin/env node
// Agreement by mutation: takes valid resources (every golden output and the good cases),
// makes one small change at a time everywhere in them (drop a member, empty a string, change
// a JSON type, add an unknown member, break a date, unwrap an array, ...), and runs every
// variant through the three validators.
//
// The built-in validator runs with --base (base R4 only), like the independent ones. Fails
// when it ACCEPTS a variant that HL7's JSON Schema or medplum rejects (a base R4 rule
// spbridge would miss), or REJECTS, as a structure error, a variant that only drops a
// member (an optional element: the built-in validator would be inventing a rule). Other
// variants only the built-in rejects are expected where the independent validators have
// blind spots (docs/conformance.md); they are counted by reason, not failed.
//
// By default one referral Bundle and one report record from the golden cases are mutated
// with the good cases that are single resources (about 3,000 variants, under a minute);
// --all mutates every golden output and every good case (about 10,000, a few minutes).
//
// usage: node mutations.mjs SPBRIDGE REPO [--all] [--verbose]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [spbridge, repo] = process.argv.slice(2);
const verbose = process.argv.includes('--verbose');
const everything = process.argv.includes('--all');
const SHAPES = ['native-referral', 'native-declined'];
if (!spbridge || !repo) {
  process.stderr.write('usage: node mutations.mjs SPBRIDGE REPO [--all] [--verbose]\n');
  process.exit(2);
}

// ---- the valid resources to mutate
const sources = [];
const golden = path.join(repo, 'tests', 'golden');
for (const d of readdirSync(golden).sort()) {
  const f = path.join(golden, d, 'expected.ndjson');
  if (!existsSync(f) || (!everything && !SHAPES.includes(d))) continue;
  for (const line of readFileSync(f, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const r = JSON.parse(line);
    if (r.resourceType !== 'OperationOutcome') sources.push({ name: `golden/${d}`, r });
  }
}
const goodDir = path.join(repo, 'tests', 'conformance-cases', 'good');
for (const f of readdirSync(goodDir).sort()) {
  if (!f.endsWith('.json')) continue;
  const r = JSON.parse(readFileSync(path.join(goodDir, f), 'utf8'));
  if (everything || r.resourceType !== 'Bundle') sources.push({ name: `good/${f}`, r });
}

// ---- mutations: [label, function(value, key) -> new value | undefined to drop]
const DROP = Symbol('drop');
const mutations = [
  ['drop', () => DROP],
  ['empty-string', (v) => (typeof v === 'string' ? '' : undefined)],
  ['leading-space', (v) => (typeof v === 'string' && !v.startsWith('<') ? ` ${v}` : undefined)],
  ['string-to-number', (v) => (typeof v === 'string' ? 7 : undefined)],
  ['to-boolean', (v) => (typeof v !== 'boolean' ? true : undefined)],
  ['boolean-to-string', (v) => (typeof v === 'boolean' ? String(v) : undefined)],
  ['to-empty-object', (v) => (v !== null && typeof v === 'object' && !Array.isArray(v) ? {} : undefined)],
  ['object-to-string', (v) => (v !== null && typeof v === 'object' && !Array.isArray(v) ? 'x' : undefined)],
  ['empty-array', (v) => (Array.isArray(v) ? [] : undefined)],
  ['unwrap-array', (v) => (Array.isArray(v) && v.length > 0 ? v[0] : undefined)],
  ['wrap-in-array', (v) => (!Array.isArray(v) ? [v] : undefined)],
  ['bad-date', (v) => (typeof v === 'string' && /^\d{4}-\d{2}-\d{2}/.test(v) ? v.replace(/^(\d{4})-\d{2}/, '$1-13') : undefined)],
  ['date-without-zone', (v) => (typeof v === 'string' && /T\d{2}:\d{2}:\d{2}/.test(v) ? v.replace(/(Z|[+-]\d{2}:\d{2})$/, '') : undefined)],
  ['code-bogus', (v, k) => (['status', 'intent', 'priority', 'gender', 'use', 'system', 'method', 'type', 'severity', 'code'].includes(k) && typeof v === 'string' ? 'bogus-code' : undefined)],
];

// Every path to a member or array item, as a list of keys.
function paths(v, prefix = [], out = []) {
  if (Array.isArray(v)) v.forEach((x, i) => { out.push([...prefix, i]); paths(x, [...prefix, i], out); });
  else if (v !== null && typeof v === 'object') for (const k of Object.keys(v)) { if (k === 'resourceType') continue; out.push([...prefix, k]); paths(v[k], [...prefix, k], out); }
  return out;
}
function apply(root, p, fn) {
  const copy = structuredClone(root);
  let parent = copy;
  for (const k of p.slice(0, -1)) parent = parent[k];
  const last = p[p.length - 1];
  const next = fn(parent[last], typeof last === 'number' ? p.filter((x) => typeof x === 'string').pop() : last);
  if (next === undefined) return null;
  if (next === DROP) {
    if (Array.isArray(parent)) parent.splice(last, 1);
    else delete parent[last];
  } else parent[last] = next;
  return copy;
}
function addUnknown(root, p) {
  const copy = structuredClone(root);
  let o = copy;
  for (const k of p) o = o[k];
  if (o === null || typeof o !== 'object' || Array.isArray(o)) return null;
  o.spbridgeUnknownMember = 'x';
  return copy;
}

const variants = [];
const seen = new Set();
for (const s of sources) {
  const all = paths(s.r);
  for (const p of all) {
    for (const [label, fn] of mutations) {
      const m = apply(s.r, p, fn);
      if (m === null) continue;
      const text = JSON.stringify(m);
      if (seen.has(text)) continue;
      seen.add(text);
      variants.push({ source: s.name, where: p.join('.'), label, text });
    }
  }
  for (const p of [[], ...all]) {
    const m = addUnknown(s.r, p);
    if (m === null) continue;
    const text = JSON.stringify(m);
    if (!seen.has(text)) {
      seen.add(text);
      variants.push({ source: s.name, where: p.join('.') || '(root)', label: 'unknown-member', text });
    }
  }
}

const work = mkdtempSync(path.join(os.tmpdir(), 'spb-mutations-'));
const file = path.join(work, 'variants.ndjson');
writeFileSync(file, variants.map((v) => v.text).join('\n') + '\n');

// built-in on base R4 (--base: the independent validators know nothing of spbridge's
// profiles): one OperationOutcome per line with --outcomes, in order
const b = spawnSync(spbridge, ['validate', '--base', '--outcomes', file], { encoding: 'utf8', maxBuffer: 1 << 30 });
const outcomes = b.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
// independent validators
const ind = spawnSync('node', [path.join(repo, 'conformance', 'validators', 'validate.mjs'), '--json', file], {
  encoding: 'utf8',
  maxBuffer: 1 << 30,
});
const results = JSON.parse(ind.stdout).results;
rmSync(work, { recursive: true, force: true });
if (outcomes.length !== variants.length || results.length !== variants.length) {
  process.stderr.write(`FAIL: ${variants.length} variants, ${outcomes.length} built-in verdicts, ${results.length} independent verdicts\n`);
  process.exit(1);
}

let missed = 0;
let overstrict = 0;
const onlyBuiltin = new Map();
const counts = { variants: variants.length, allReject: 0, allAccept: 0, builtinOnly: 0 };
variants.forEach((v, i) => {
  const errors = (outcomes[i].issue ?? []).filter((x) => x.severity === 'error' || x.severity === 'fatal');
  const builtinRejects = errors.length > 0;
  const js = !results[i].validators.jsonschema.valid;
  const mp = !results[i].validators.medplum.valid;
  if ((js || mp) && !builtinRejects) {
    missed++;
    const why = [js ? `jsonschema: ${JSON.stringify(results[i].validators.jsonschema.errors[0])}` : '', mp ? `medplum: ${JSON.stringify(results[i].validators.medplum.errors[0])}` : '']
      .filter(Boolean)
      .join('; ');
    process.stdout.write(`MISSED ${v.source} ${v.label} at ${v.where}: ${why}\n`);
  } else if (builtinRejects && !js && !mp) {
    counts.builtinOnly++;
    // a dropped member or array item that is neither required by base R4 nor by a profile
    // must never be rejected: that would be the built-in validator inventing a rule
    const codes = new Set(errors.map((e) => e.code));
    const key = `${v.label} -> ${[...codes].sort().join('+')}`;
    onlyBuiltin.set(key, (onlyBuiltin.get(key) ?? 0) + 1);
    if (verbose) process.stdout.write(`builtin-only ${v.source} ${v.label} at ${v.where}: ${errors[0].expression?.[0]}: ${errors[0].details.text}\n`);
    if (v.label === 'drop' && codes.size === 1 && codes.has('structure')) {
      overstrict++;
      process.stdout.write(`OVERSTRICT ${v.source} drop at ${v.where}: ${errors[0].details.text}\n`);
    }
  } else if (builtinRejects) counts.allReject++;
  else counts.allAccept++;
});
process.stdout.write('variants rejected only by the built-in validator, by mutation and issue type:\n');
for (const [k, n] of [...onlyBuiltin].sort()) process.stdout.write(`  ${String(n).padStart(5)}  ${k}\n`);
process.stdout.write(
  `summary: sources=${sources.length} variants=${counts.variants} accepted-by-all=${counts.allAccept} ` +
    `rejected-by-builtin-and-another=${counts.allReject} builtin-only=${counts.builtinOnly} ` +
    `missed-by-builtin=${missed} overstrict=${overstrict} -> ${missed || overstrict ? 'NOT OK' : 'OK'}\n`,
);
process.exit(missed || overstrict ? 1 : 0);
