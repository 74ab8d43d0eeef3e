#!/usr/bin/env node
// The conformance cases: tests/conformance-cases/good/* must be accepted by every validator
// (spbridge's built-in one; HL7's R4 JSON Schema and @medplum/core on base R4, both run by
// conformance/validators/validate.mjs; @medplum/core on spbridge's profiles, run by
// validate_profiles.mjs), and every tests/conformance-cases/broken/* must get exactly the
// verdicts expectations.tsv records: the built-in validator rejects each (reporting the
// expected FHIRPath), and each independent validator rejects it exactly when it is able to
// detect that fault. Prints the verdict table; exit 0 when every verdict is as expected, 1
// otherwise, 2 on usage errors.
//
// usage: node check_cases.mjs SPBRIDGE REPO [CASES_DIR]
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';

const [spbridge, repo, casesArg] = process.argv.slice(2);
if (!spbridge || !repo) {
  process.stderr.write('usage: node check_cases.mjs SPBRIDGE REPO [CASES_DIR]\n');
  process.exit(2);
}
const casesDir = casesArg ?? path.join(repo, 'tests', 'conformance-cases');
const validators = path.join(repo, 'conformance', 'validators');
if (!existsSync(path.join(validators, 'node_modules'))) {
  process.stderr.write(`FAIL: ${validators}/node_modules is missing; run 'npm ci' there\n`);
  process.exit(1);
}

const list = (dir) =>
  readdirSync(path.join(casesDir, dir))
    .filter((f) => f.endsWith('.json') || f.endsWith('.ndjson'))
    .sort()
    .map((f) => path.join(casesDir, dir, f));
const good = list('good');
const broken = list('broken');

// ---- expectations
const expect = new Map();
for (const line of readFileSync(path.join(casesDir, 'expectations.tsv'), 'utf8').split('\n')) {
  if (line.trim() === '' || line.startsWith('#')) continue;
  const [name, builtin, jsonschema, medplum, profiles, expression, what] = line.split('\t');
  for (const v of [builtin, jsonschema, medplum, profiles]) {
    if (v !== 'accept' && v !== 'reject') {
      process.stderr.write(`expectations.tsv: ${name}: verdicts are accept or reject\n`);
      process.exit(2);
    }
  }
  expect.set(name, { builtin, jsonschema, medplum, profiles, expression, what });
}
const caseName = (f) => path.basename(f).replace(/\.n?json$/, '');
let failures = 0;
const fail = (msg) => {
  failures++;
  process.stdout.write(`FAIL ${msg}\n`);
};
for (const f of broken) if (!expect.has(caseName(f))) fail(`${caseName(f)}: no line in expectations.tsv`);
for (const name of expect.keys()) if (!broken.some((f) => caseName(f) === name)) fail(`${name}: in expectations.tsv but no broken/${name}.json`);
for (const [name, e] of expect) if (e.builtin !== 'reject') fail(`${name}: the built-in validator must reject every broken case`);

// ---- built-in: one OperationOutcome per resource (--outcomes), NDJSON on stdout
function builtin(file, base = false) {
  const r = spawnSync(spbridge, ['validate', ...(base ? ['--base'] : []), '--outcomes', file], { encoding: 'utf8' });
  const outcomes = r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
  const issues = outcomes.flatMap((o) => o.issue ?? []);
  const errors = issues.filter((i) => i.severity === 'error' || i.severity === 'fatal');
  return {
    exit: r.status,
    verdict: errors.length > 0 ? 'reject' : 'accept',
    expressions: errors.flatMap((i) => i.expression ?? []),
    first: errors[0] ? `${errors[0].code} ${errors[0].expression?.[0] ?? ''}: ${errors[0].details?.text}` : '',
  };
}

// ---- independent validators, all files in one run
function independent(files) {
  let out;
  try {
    out = execFileSync('node', [path.join(validators, 'validate.mjs'), '--json', ...files], {
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (e) {
    out = e.stdout; // exit 1 when something was rejected: the JSON is still complete
  }
  const byFile = new Map();
  for (const r of JSON.parse(out).results) {
    if (r.inputError) {
      fail(`${r.file}: ${r.inputError}`);
      continue;
    }
    const prev = byFile.get(r.file) ?? { jsonschema: 'accept', medplum: 'accept', why: {} };
    for (const v of ['jsonschema', 'medplum']) {
      if (!r.validators[v].valid) {
        prev[v] = 'reject';
        prev.why[v] = r.validators[v].errors[0] ? `${r.validators[v].errors[0].path}: ${r.validators[v].errors[0].message}` : '';
      }
    }
    byFile.set(r.file, prev);
  }
  // spbridge's profiles, by medplum
  let pout;
  try {
    pout = execFileSync('node', [path.join(path.dirname(new URL(import.meta.url).pathname), 'validate_profiles.mjs'), '--json', repo, ...files], {
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (e) {
    pout = e.stdout;
  }
  for (const r of JSON.parse(pout).results) {
    const prev = byFile.get(r.file) ?? { jsonschema: '?', medplum: '?', why: {} };
    if (prev.profiles !== 'reject') prev.profiles = r.valid ? 'accept' : 'reject';
    if (!r.valid) prev.why.profiles = `${r.errors[0].path}: ${r.errors[0].message}`;
    byFile.set(r.file, prev);
  }
  return byFile;
}

const VALIDATORS = ['jsonschema', 'medplum', 'profiles'];
const ind = independent([...good, ...broken]);

process.stdout.write('good cases (every validator must accept):\n');
for (const f of good) {
  const b = builtin(f);
  const i = ind.get(f) ?? { jsonschema: '?', medplum: '?', profiles: '?' };
  const row = `  ${caseName(f).padEnd(40)} builtin=${b.verdict} jsonschema=${i.jsonschema} medplum=${i.medplum} profiles=${i.profiles}`;
  process.stdout.write(`${row}\n`);
  if (b.verdict !== 'accept' || b.exit !== 0) fail(`good/${path.basename(f)}: built-in rejected it: ${b.first}`);
  if (builtin(f, true).verdict !== 'accept') fail(`good/${path.basename(f)}: built-in --base rejected it`);
  for (const v of VALIDATORS) if (i[v] !== 'accept') fail(`good/${path.basename(f)}: ${v} rejected it: ${i.why?.[v] ?? ''}`);
}

process.stdout.write('\nbroken cases (expected verdicts from expectations.tsv):\n');
process.stdout.write(`  ${'case'.padEnd(40)} ${'builtin'.padEnd(8)} ${'jsonschema'.padEnd(11)} ${'medplum'.padEnd(8)} ${'profiles'.padEnd(9)} builtin --base\n`);
let agreeAll = 0;
let detectedByAnother = 0;
for (const f of broken) {
  const name = caseName(f);
  const e = expect.get(name);
  if (!e) continue;
  const b = builtin(f);
  const bb = builtin(f, true);
  const i = ind.get(f) ?? { jsonschema: '?', medplum: '?', profiles: '?', why: {} };
  const mark = (got, want) => (got === want ? got : `${got}(!)`);
  process.stdout.write(
    `  ${name.padEnd(40)} ${mark(b.verdict, 'reject').padEnd(8)} ${mark(i.jsonschema, e.jsonschema).padEnd(11)} ${mark(i.medplum, e.medplum).padEnd(8)} ${mark(i.profiles, e.profiles).padEnd(9)} ${bb.verdict}\n`,
  );
  // on base R4 alone the built-in validator must still catch what the base validators catch
  if ((i.jsonschema === 'reject' || i.medplum === 'reject') && bb.verdict !== 'reject')
    fail(`broken/${name}: spbridge validate --base accepts what ${i.jsonschema === 'reject' ? 'jsonschema' : 'medplum'} rejects`);
  if (b.verdict !== 'reject') fail(`broken/${name}: the built-in validator accepted it`);
  else if (b.exit !== 3) fail(`broken/${name}: spbridge validate exited ${b.exit}, not 3`);
  if (b.verdict === 'reject' && e.expression && !b.expressions.includes(e.expression))
    fail(`broken/${name}: expected an error at ${e.expression}; got ${b.expressions.join(', ')}`);
  for (const v of VALIDATORS) {
    if (i[v] !== e[v])
      fail(`broken/${name}: ${v} ${i[v] === 'reject' ? `now rejects it (${i.why[v]})` : 'no longer rejects it'}; expectations.tsv says ${e[v]}`);
  }
  if (i.jsonschema === 'reject' && i.medplum === 'reject') agreeAll++;
  if (VALIDATORS.some((v) => i[v] === 'reject')) detectedByAnother++;
}
process.stdout.write(
  `\nsummary: good=${good.length} broken=${broken.length} ` +
    `rejected-by-an-independent-validator-too=${detectedByAnother} rejected-by-both-base-validators=${agreeAll} ` +
    `failures=${failures} -> ${failures ? 'NOT OK' : 'OK'}\n`,
);
process.exit(failures ? 1 : 0);
