#!/usr/bin/env node
// An independent check of spbridge's own profiles: @medplum/core's StructureDefinition
// validator (pinned in conformance/validators) runs every Patient, Organization,
// ServiceRequest and Task (top-level, or a Bundle entry) against the snapshot of
// spbridge's profile for its type (conformance/profiles/spbridge-*.json). Medplum applies
// cardinality, fixed and pattern values, slices and the profiles' FHIRPath invariants;
// it does not check bindings, and reports reference target types only as warnings.
//
// usage: node validate_profiles.mjs [--json] REPO FILE...
// FILE: one JSON resource or NDJSON. Prints `ok profiles FILE#N TYPE` or
// `FAIL profiles FILE#N TYPE: path: message; ...` per resource (like validate.mjs), or with
// --json one document {results: [{file, index, valid, errors}]}. Exit 0 when all pass,
// 1 otherwise, 2 usage.
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';

const args = process.argv.slice(2);
const json = args[0] === '--json';
if (json) args.shift();
const [repo, ...files] = args;
if (!repo || files.length === 0) {
  process.stderr.write('usage: node validate_profiles.mjs [--json] REPO FILE...\n');
  process.exit(2);
}
const nm = path.join(repo, 'conformance', 'validators', 'node_modules');
if (typeof globalThis.WebSocket === 'undefined') {
  globalThis.WebSocket = class WebSocket {
    constructor() {
      throw new Error('WebSocket is not available in the validator');
    }
  };
}
const core = await import(path.join(nm, '@medplum', 'core', 'dist', 'esm', 'index.mjs'));
const defs = await import(path.join(nm, '@medplum', 'definitions', 'dist', 'esm', 'index.mjs'));
for (const f of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) core.indexStructureDefinitionBundle(defs.readJson(f));

const profiles = new Map();
const profDir = path.join(repo, 'conformance', 'profiles');
for (const f of readdirSync(profDir).sort()) {
  if (!f.startsWith('spbridge-') || !f.endsWith('.json')) continue;
  const sd = JSON.parse(readFileSync(path.join(profDir, f), 'utf8'));
  core.loadDataType(sd);
  profiles.set(sd.type, sd);
}

function records(file) {
  const text = readFileSync(file === '-' ? 0 : file, 'utf8');
  try {
    return [JSON.parse(text)];
  } catch {
    return text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
  }
}

function check(resource, prefix, errors) {
  const sd = profiles.get(resource?.resourceType);
  if (!sd) return;
  let issues;
  try {
    issues = core.validateResource(structuredClone(resource), { profile: sd });
  } catch (e) {
    issues = e?.outcome?.issue ?? [{ severity: 'error', details: { text: String(e?.message ?? e) } }];
  }
  for (const i of issues) {
    if (i.severity !== 'error' && i.severity !== 'fatal') continue;
    const p = i.expression?.[0] ?? resource.resourceType;
    errors.push({ path: prefix ? prefix + p.slice(resource.resourceType.length) : p, message: i.details?.text ?? i.diagnostics ?? 'error' });
  }
}

const results = [];
for (const file of files) {
  records(file).forEach((r, k) => {
    const errors = [];
    check(r, '', errors);
    if (r?.resourceType === 'Bundle') (r.entry ?? []).forEach((e, i) => check(e?.resource, `Bundle.entry[${i}].resource`, errors));
    results.push({ file, index: k + 1, resourceType: r?.resourceType, valid: errors.length === 0, errors });
  });
}
if (json) {
  process.stdout.write(`${JSON.stringify({ results }, null, 2)}\n`);
} else {
  for (const r of results) {
    process.stdout.write(
      r.valid
        ? `ok profiles ${r.file}#${r.index} ${r.resourceType}\n`
        : `FAIL profiles ${r.file}#${r.index} ${r.resourceType}: ${r.errors.slice(0, 5).map((e) => `${e.path}: ${e.message}`).join('; ')}\n`,
    );
  }
}
process.exit(results.every((r) => r.valid) ? 0 : 1);
