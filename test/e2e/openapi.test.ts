// GET /openapi.json against the server that serves it: a valid OpenAPI 3.1
// document; every route Fastify registered is documented with a summary
// (the dashboard's pages aside) and every documented operation is a route
// that exists; and the real answers of both dialects, errors included, match
// the schemas the document gives for their path, method and status.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { DASHBOARD_ASSET_PREFIX } from '../../src/web/dashboard.ts';
import {
  call,
  chatJsonl,
  pollUntil,
  removeAllTempDirs,
  SLOW_MODEL,
  startTestSpool,
  uploadMultipart,
  waitForBatchStatus,
  type ApiCall,
  type TestSpool,
} from '../helpers/spool.ts';

// ajv-formats is CommonJS: under Node's ESM loader its default import is module.exports itself.
const addFormats = addFormatsModule as unknown as typeof addFormatsModule.default;

type Doc = { openapi: string; paths: Record<string, Record<string, { summary?: string; operationId?: string; responses: Record<string, any> }>> } & Record<string, any>;

let spool: TestSpool;
let doc: Doc;
let ajv: Ajv2020;

before(async () => {
  spool = await startTestSpool();
  const res = await call(`${spool.url}/openapi.json`);
  assert.equal(res.status, 200, res.text);
  doc = res.json;
  ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  // The whole document under one id, so "#/components/schemas/..." resolves; it is not itself a schema.
  ajv.addSchema(doc, 'openapi', undefined, false);
});

after(async () => {
  await spool?.stop();
  removeAllTempDirs();
});

/** METHOD + OpenAPI path ("/v1/files/{id}") of every route Fastify has, from its route tree. */
function registeredRoutes(tree: string): Set<string> {
  const routes = new Set<string>();
  const stack: string[] = [];
  for (const line of tree.split('\n')) {
    const match = /^([\s│]*)(?:[└├]── )?(\S+)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (!match || match[2] === '') continue;
    const depth = match[1].length / 4;
    stack.length = depth;
    const parent = stack[depth - 1] ?? '';
    const path = parent === '' ? match[2] : `${parent}${parent.endsWith('/') || match[2].startsWith('/') ? '' : '/'}${match[2]}`;
    stack[depth] = path;
    for (const method of match[3]?.split(', ') ?? []) routes.add(`${method} ${path.replace(/:([A-Za-z_]+)/g, '{$1}')}`);
  }
  return routes;
}

const isDashboard = (path: string) => path === '/' || path.startsWith(DASHBOARD_ASSET_PREFIX);

function documentedOperations(): Set<string> {
  const ops = new Set<string>();
  for (const [path, item] of Object.entries(doc.paths)) for (const method of Object.keys(item)) ops.add(`${method.toUpperCase()} ${path}`);
  return ops;
}

/** Checks one real answer against the document: its status is listed, and a JSON body matches the listed schema. */
function conforms(method: string, template: string, res: ApiCall): void {
  const where = `${method} ${template} -> ${res.status}`;
  const operation = doc.paths[template]?.[method.toLowerCase()];
  assert.ok(operation, `${method} ${template} is documented`);
  const response = operation.responses[String(res.status)];
  assert.ok(response, `${where}: the document lists this status (it lists ${Object.keys(operation.responses).join(', ')})`);
  const contentType = (res.headers.get('content-type') ?? '').split(';')[0];
  const listed = Object.keys(response.content ?? {});
  if (listed.length === 0) return;
  assert.ok(listed.includes(contentType) || (contentType === 'text/plain' && listed.includes('text/plain')), `${where}: content-type ${contentType} is one of ${listed}`);
  if (contentType !== 'application/json') return;
  const pointer = ['paths', template, method.toLowerCase(), 'responses', String(res.status), 'content', 'application/json', 'schema']
    .map((part) => part.replace(/~/g, '~0').replace(/\//g, '~1'))
    .join('/');
  const id = `openapi#/${pointer}`;
  const validate = (ajv.getSchema(id) as ValidateFunction | undefined) ?? ajv.compile({ $ref: id });
  assert.ok(validate(res.json), `${where}: body matches the documented schema: ${ajv.errorsText(validate.errors)}\n${res.text.slice(0, 800)}`);
}

const json = (body: unknown) => ({ method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

describe('/openapi.json', () => {
  it('is a valid OpenAPI 3.1 document', async () => {
    assert.equal(doc.openapi, '3.1.0');
    const result = await new Validator().validate(doc);
    assert.ok(result.valid, `invalid OpenAPI: ${JSON.stringify(result.errors, null, 2)?.slice(0, 3000)}`);
    const ids = Object.values(doc.paths).flatMap((item) => Object.values(item).map((op) => op.operationId));
    assert.equal(new Set(ids).size, ids.length, 'operationIds are unique');
  });

  it('documents every route the server has, and only those', () => {
    const registered = registeredRoutes(spool.app.server.printRoutes({ commonPrefix: false }));
    assert.ok(registered.has('GET /v1/files/{id}') && registered.has('POST /openai/v1/batches'), 'route tree parsed');
    const documented = documentedOperations();
    const api = [...registered].filter((route) => !route.startsWith('HEAD ') && !isDashboard(route.split(' ')[1]));
    const missing = api.filter((route) => !documented.has(route));
    assert.deepEqual(missing, [], 'routes with no OpenAPI operation');
    const unsummarized = api.filter((route) => {
      const [method, path] = route.split(' ');
      return !doc.paths[path][method.toLowerCase()].summary;
    });
    assert.deepEqual(
      unsummarized,
      [],
      'routes without documentation: add them to src/api/openapi/operations.ts (or give the route a schema.summary)',
    );
    const phantom = [...documented].filter((op) => !registered.has(op));
    assert.deepEqual(phantom, [], 'documented operations that are not routes');
    assert.ok(![...documented].some((op) => isDashboard(op.split(' ')[1])), 'the dashboard pages are not API');
  });

  it("matches the real answers of both dialects, the operational endpoints' and the errors'", async () => {
    const key = spool.apiKey;
    for (const [prefix, dialect] of [
      ['/openai/v1', 'openai'],
      ['/v1', 'together'],
    ] as const) {
      const base = `${spool.url}${prefix}`;
      const at = (path: string) => `${prefix}${path}`;

      // Files.
      const uploaded = await uploadMultipart(base, key, chatJsonl(3, { model: 'echo', openaiForm: true }), { purpose: dialect === 'openai' ? 'batch' : 'batch-api' });
      conforms('POST', at('/files'), uploaded);
      const fileId = uploaded.json.id as string;
      conforms('POST', at('/files/upload'), await uploadMultipart(base, key, chatJsonl(1, { model: 'echo' }), { purpose: 'batch-api', file_name: 'u.jsonl' }, 'u.jsonl', '/files/upload'));
      conforms('GET', at('/files'), await call(`${base}/files`, { key }));
      conforms('GET', at('/files/{id}'), await call(`${base}/files/${fileId}`, { key }));
      conforms('GET', at('/files/{id}'), await call(`${base}/files/file-nope`, { key }));
      conforms('POST', at('/files/{id}/preprocess'), await call(`${base}/files/${fileId}/preprocess`, { key, method: 'POST' }));
      conforms('GET', at('/files'), await call(`${base}/files`, { key: null }));
      if (dialect === 'together') {
        const form = new URLSearchParams({ purpose: 'batch-api', file_name: 'signed.jsonl', file_type: 'jsonl' });
        const started = await call(`${base}/files`, { key, method: 'POST', body: form });
        conforms('POST', at('/files'), started);
        const put = await call(started.headers.get('location')!, { method: 'PUT', body: chatJsonl(1, { model: 'echo' }) });
        conforms('PUT', '/uploads/{id}', put);
        conforms('PUT', '/uploads/{id}', await call(started.headers.get('location')!, { method: 'PUT', body: 'again' }));
      } else {
        conforms('POST', at('/files'), await call(`${base}/files`, { key, method: 'POST', body: new URLSearchParams({ purpose: 'batch' }) }));
      }

      // Batches: one that completes, one cancelled and then retried.
      const created = await call(`${base}/batches`, { key, ...json({ input_file_id: fileId, endpoint: '/v1/chat/completions' }) });
      conforms('POST', at('/batches'), created);
      const batchId = (dialect === 'openai' ? created.json.id : created.json.job.id) as string;
      conforms('POST', at('/batches'), await call(`${base}/batches`, { key, ...json({ endpoint: '/v1/chat/completions' }) }));
      conforms('GET', at('/batches/{id}'), await call(`${base}/batches/${batchId}`, { key }));
      conforms('GET', at('/batches'), await call(`${base}/batches`, { key }));
      const done = await waitForBatchStatus(base, key, batchId, dialect === 'openai' ? 'completed' : 'COMPLETED');
      conforms('GET', at('/batches/{id}'), await call(`${base}/batches/${batchId}`, { key }));
      conforms('POST', at('/batches/{id}/cancel'), await call(`${base}/batches/${batchId}/cancel`, { key, method: 'POST' }));
      conforms('POST', at('/batches/{id}/retry'), await call(`${base}/batches/${batchId}/retry`, { key, method: 'POST' }));

      const outputId = done.output_file_id as string;
      conforms('GET', at('/files/{id}/content'), await call(`${base}/files/${outputId}/content`, { key }));
      conforms('GET', at('/files/{id}/content'), await call(`${base}/files/${outputId}/content`, { key, headers: { range: 'bytes=5-' } }));
      conforms('GET', at('/files/{id}/content'), await call(`${base}/files/${outputId}/content`, { key, headers: { range: 'bytes=99999999-' } }));
      conforms('DELETE', at('/files/{id}'), await call(`${base}/files/${outputId}`, { key, method: 'DELETE' }));

      const slowFile = await uploadMultipart(base, key, chatJsonl(6, { model: SLOW_MODEL }), { purpose: 'batch' });
      const slow = await call(`${base}/batches`, { key, ...json({ input_file_id: slowFile.json.id, endpoint: '/v1/chat/completions' }) });
      const slowId = (dialect === 'openai' ? slow.json.id : slow.json.job.id) as string;
      conforms('POST', at('/batches/{id}/cancel'), await call(`${base}/batches/${slowId}/cancel`, { key, method: 'POST' }));
      await waitForBatchStatus(base, key, slowId, dialect === 'openai' ? 'cancelled' : 'CANCELLED');
      const retried = await call(`${base}/batches/${slowId}/retry`, { key, method: 'POST' });
      conforms('POST', at('/batches/{id}/retry'), retried);
      const retryId = (dialect === 'openai' ? retried.json.id : retried.json.job.id) as string;
      await call(`${base}/batches/${retryId}/cancel`, { key, method: 'POST' });

      // Real-time inference on the echo emulator.
      conforms('POST', at('/chat/completions'), await call(`${base}/chat/completions`, { key, ...json({ model: 'echo', messages: [{ role: 'user', content: 'hi' }] }) }));
      conforms('POST', at('/completions'), await call(`${base}/completions`, { key, ...json({ model: 'echo', prompt: 'hi' }) }));
      conforms('POST', at('/embeddings'), await call(`${base}/embeddings`, { key, ...json({ model: 'echo', input: 'hi' }) }));
      conforms('POST', at('/chat/completions'), await call(`${base}/chat/completions`, { key, ...json({ model: 'no-such-model', messages: [] }) }));
    }

    // The Anthropic dialect, mounted once at /v1/messages.
    const anthropic = (path: string, init: RequestInit = {}) => call(`${spool.url}/v1/messages${path}`, { ...init, headers: { 'x-api-key': key, ...(init.headers ?? {}) }, key: null });
    const params = { model: 'echo', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] };
    const messageBatch = await anthropic('/batches', json({ requests: [{ custom_id: 'a', params }] }));
    conforms('POST', '/v1/messages/batches', messageBatch);
    conforms('POST', '/v1/messages/batches', await anthropic('/batches', json({ requests: [{ custom_id: 'bad id', params }] })));
    conforms('POST', '/v1/messages/batches', await call(`${spool.url}/v1/messages/batches`, { ...json({ requests: [] }), key: null }));
    const messageBatchId = messageBatch.json.id as string;
    conforms('GET', '/v1/messages/batches/{id}', await anthropic(`/batches/${messageBatchId}`));
    conforms('GET', '/v1/messages/batches/{id}', await anthropic('/batches/msgbatch_nope'));
    conforms('GET', '/v1/messages/batches/{id}/results', await anthropic(`/batches/msgbatch_nope/results`));
    await pollUntil(
      () => anthropic(`/batches/${messageBatchId}`),
      (res) => res.json.processing_status === 'ended',
      { what: 'the message batch to end' },
    );
    conforms('GET', '/v1/messages/batches', await anthropic('/batches?limit=5'));
    conforms('GET', '/v1/messages/batches/{id}/results', await anthropic(`/batches/${messageBatchId}/results`));
    conforms('POST', '/v1/messages/batches/{id}/cancel', await anthropic(`/batches/${messageBatchId}/cancel`, { method: 'POST' }));
    conforms('DELETE', '/v1/messages/batches/{id}', await anthropic(`/batches/${messageBatchId}`, { method: 'DELETE' }));
    conforms('POST', '/v1/messages', await anthropic('', json(params)));
    conforms('POST', '/v1/messages', await anthropic('', json({ ...params, stream: true })));
    conforms('POST', '/v1/messages', await anthropic('', json({ ...params, model: 'no-such-model' })));

    // Outside the dialects.
    conforms('GET', '/healthz', await call(`${spool.url}/healthz`));
    conforms('GET', '/readyz', await call(`${spool.url}/readyz`));
    conforms('GET', '/metrics', await call(`${spool.url}/metrics`));
    conforms('GET', '/openapi.json', await call(`${spool.url}/openapi.json`));
    conforms('GET', '/v1/admin/status', await call(`${spool.url}/v1/admin/status`, { key }));
    conforms('GET', '/v1/admin/status', await call(`${spool.url}/v1/admin/status`, { key: await spool.keyFor('bob') }));
    // Batches left running would only slow the teardown.
    await pollUntil(
      () => call(`${spool.url}/openai/v1/batches`, { key }),
      (res) => res.json.data.every((b: { status: string }) => !['validating', 'in_progress', 'finalizing', 'cancelling'].includes(b.status)),
      { what: 'every batch to finish' },
    );
  });
});
