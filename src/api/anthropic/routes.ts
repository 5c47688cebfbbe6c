// Anthropic's Message Batches API at /v1/messages/batches, and its real-time
// POST /v1/messages, as the official SDKs call them. Its own scope: keys may
// come as x-api-key, errors are in Anthropic's envelope, and the create body is
// streamed rather than parsed whole. Only batches created here are seen here;
// they are seen (by their batch- id or this msgbatch_ one) in the other dialects too.
import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { KeyVerifier } from '../../auth/keys.ts';
import { deleteEndedBatch } from '../../batches/deletion.ts';
import { createInlineBatch } from '../../batches/inline-batch.ts';
import { MESSAGES_BATCH_ENDPOINT } from '../../batches/input-validator.ts';
import type { BatchService } from '../../batches/service.ts';
import { ApiError } from '../../errors.ts';
import type { FileService } from '../../files/service.ts';
import type { Store } from '../../store/index.ts';
import { listBatches } from '../../store/sql/batches.ts';
import type { BatchRow } from '../../store/sql/schema.ts';
import type { RealtimeGateway } from '../../upstreams/realtime.ts';
import { asFields, optionalString, queryInteger } from '../request-fields.ts';
import { requireAnthropicKey } from './auth.ts';
import { batchRequestLines } from './batch-requests.ts';
import { messageBatchCounts, unrunOutcome } from './counts.ts';
import { anthropicError, installAnthropicErrors } from './errors.ts';
import { internalBatchId, messageBatchId } from './ids.ts';
import { isEnded, presentMessageBatch } from './message-batch.ts';
import { realtimeMessage } from './realtime-message.ts';
import { failedResults, succeededResults, unrunResults } from './results.ts';

export interface AnthropicRoutesOptions {
  store: Store;
  batches: BatchService;
  files: FileService;
  verifier: KeyVerifier;
  gateway: RealtimeGateway;
  limits: { maxRequests: number; maxBytes: number };
  completionWindow: string;
  /** Longest a real-time request may take. */
  timeoutMs: number;
  publicUrl?: string;
}

// Message Batches are listed 20 at a time unless asked otherwise, at most 1000 (Anthropic's bounds).
const LIST_LIMIT = { min: 1, max: 1000, fallback: 20 };
// A real-time request carries its images inline, as base64.
const MESSAGE_BODY_LIMIT = 32 * 1024 * 1024;

/** Mount with prefix /v1/messages. */
export async function anthropicRoutes(scope: FastifyInstance, options: AnthropicRoutesOptions): Promise<void> {
  installAnthropicErrors(scope, options.limits.maxBytes);
  requireAnthropicKey(scope, options.verifier);
  await scope.register(async (batchesScope) => {
    // The create body may be 256 MiB: handed over unread, as a stream, to be parsed while it is stored.
    batchesScope.removeAllContentTypeParsers();
    batchesScope.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
    await messageBatchRoutes(batchesScope, options);
  });
  await scope.register(async (messageScope) => {
    messageScope.post('', { bodyLimit: MESSAGE_BODY_LIMIT }, (request, reply) =>
      realtimeMessage(request, reply, { gateway: options.gateway, timeoutMs: options.timeoutMs }),
    );
  });
}

async function messageBatchRoutes(scope: FastifyInstance, options: AnthropicRoutesOptions): Promise<void> {
  const { store, batches } = options;
  const db = store.sql.db;
  const present = async (request: FastifyRequest, batch: BatchRow) =>
    presentMessageBatch(batch, await messageBatchCounts(db, batch), options.publicUrl?.replace(/\/+$/, '') ?? `${request.protocol}://${request.host}`);

  /** The caller's Message Batch: other users' batches, and batches made in other dialects, are not found. */
  const find = async (request: FastifyRequest<{ Params: { id: string } }>): Promise<BatchRow> => {
    const { id } = request.params;
    const notFound = anthropicError(404, `No message batch found with id '${id}'.`);
    const batch = await batches.get(request.principal, internalBatchId(id)).catch((err: unknown) => {
      throw err instanceof ApiError && err.status === 404 ? notFound : err;
    });
    if (batch.dialect !== 'anthropic') throw notFound;
    return batch;
  };

  scope.post('/batches', async (request, reply) => {
    const body = request.body as Readable | undefined;
    if (!body) throw anthropicError(400, 'The request body is empty: send {"requests": [{"custom_id": "...", "params": {...}}, ...]}.');
    const lines = batchRequestLines(body, {
      ...options.limits,
      modelServed: async (model) => (await options.gateway.route(model)) !== null,
    });
    const batch = await createInlineBatch(store, batches, request.principal.userId, lines, {
      endpoint: MESSAGES_BATCH_ENDPOINT,
      dialect: 'anthropic',
      fileName: 'message-batch-requests.jsonl',
      // JSONL of the requests is about the size of the body that held them; the body's own limit is checked as it is read.
      maxBytes: options.limits.maxBytes + options.limits.maxRequests * 128,
      completionWindow: options.completionWindow,
    });
    return reply.status(200).send(await present(request, batch));
  });

  scope.get<{ Params: { id: string } }>('/batches/:id', async (request) => present(request, await find(request)));

  scope.get('/batches', async (request) => {
    const query = asFields(request.query);
    const limit = queryInteger(query, 'limit', LIST_LIMIT);
    const afterId = optionalString(query, 'after_id');
    const beforeId = optionalString(query, 'before_id');
    if (afterId !== undefined && beforeId !== undefined) throw anthropicError(400, 'Give after_id or before_id, not both.');
    const rows = await listBatches(db, {
      userId: request.principal.userId,
      dialect: 'anthropic',
      limit,
      after: afterId && internalBatchId(afterId),
      before: beforeId && internalBatchId(beforeId),
    });
    // Fetched one beyond the page: with before_id the extra one is the newest (first), otherwise the oldest (last).
    const page = rows.length > limit ? (beforeId ? rows.slice(1) : rows.slice(0, limit)) : rows;
    const data = await Promise.all(page.map((row) => present(request, row)));
    return { data, has_more: rows.length > limit, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null };
  });

  scope.post<{ Params: { id: string } }>('/batches/:id/cancel', async (request) => {
    const batch = await find(request);
    if (isEnded(batch)) return present(request, batch);
    return present(request, await batches.cancel(request.principal, batch.id));
  });

  scope.delete<{ Params: { id: string } }>('/batches/:id', async (request) => {
    const batch = await find(request);
    if (!isEnded(batch)) {
      throw anthropicError(400, `Message batch ${messageBatchId(batch.id)} is still processing: only an ended batch can be deleted. Cancel it first, then delete it once it has ended.`);
    }
    await deleteEndedBatch(store, batch);
    return { id: messageBatchId(batch.id), type: 'message_batch_deleted' };
  });

  scope.get<{ Params: { id: string } }>('/batches/:id/results', async (request, reply) => {
    const batch = await find(request);
    if (!isEnded(batch)) {
      throw anthropicError(400, `Message batch ${messageBatchId(batch.id)} has not ended yet: its results are ready once processing_status is "ended".`);
    }
    return reply.type('application/binary').header('cache-control', 'no-store').send(await resultStream(request, batch));
  });

  async function resultStream(request: FastifyRequest, batch: BatchRow): Promise<Readable> {
    const unrun = unrunOutcome(batch);
    if (unrun) {
      const errors: { message: string }[] = batch.errors ? JSON.parse(batch.errors) : [];
      const reason = errors.map((error) => error.message).join(' ') || 'The batch ended before this request ran.';
      const { stream } = await options.files.openContent(batch.user_id, batch.input_file_id, 0);
      return toReadable(unrunResults(stream, unrun, reason));
    }
    const output = await batches.resultsSoFar(request.principal, batch.id, 'output');
    const errors = await batches.resultsSoFar(request.principal, batch.id, 'errors');
    return toReadable(concat(succeededResults(output.stream), failedResults(errors.stream)));
  }
}

async function* concat(...parts: AsyncIterable<Buffer>[]): AsyncGenerator<Buffer> {
  for (const part of parts) yield* part;
}

function toReadable(lines: AsyncIterable<Buffer>): Readable {
  return Readable.from(lines);
}
