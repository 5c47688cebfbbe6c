// /batches: create, retrieve, list, cancel and retry in both dialects.
import { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { parseCreateBatchArgs } from '../../batches/create-args.ts';
import type { BatchService } from '../../batches/service.ts';
import { presentBatch } from '../presenters/index.ts';
import { unixSeconds } from '../presenters/time.ts';
import { LATENCY_BOUNDS_MS } from '../../store/sql/batch-stats.ts';
import { asFields, optionalBoolean, optionalString, queryInteger } from '../request-fields.ts';
import { internalBatchId } from '../anthropic/ids.ts';

export interface BatchesRoutesOptions {
  batches: BatchService;
  defaultCompletionWindow: string;
  /** limits.priority: what keys that are not admin keys may set. */
  priority: { min: number; max: number };
}

// Together's list is a bare array with no paging parameters; this many newest batches are shown.
const TOGETHER_LIST_LIMIT = 1000;

export async function batchesRoutes(app: FastifyInstance, options: BatchesRoutesOptions): Promise<void> {
  const { batches } = options;

  app.post('/batches', async (request, reply) => {
    const args = parseCreateBatchArgs(request.body, {
      defaultWindow: options.defaultCompletionWindow,
      priority: options.priority,
      isAdmin: request.principal.isAdmin,
    });
    const batch = await batches.create(request.principal.userId, args, { dialect: request.dialect });
    if (request.dialect === 'openai') return reply.status(200).send(presentBatch('openai', batch));
    return reply.status(201).send({ job: presentBatch('together', batch), warning: null });
  });

  app.get<{ Params: { id: string } }>('/batches/:id', async (request) =>
    presentBatch(request.dialect, await batches.get(request.principal, internalBatchId(request.params.id))),
  );

  // Results so far (a Spool extension, both prefixes): the output lines recorded until now (?errors=true: the error
  // lines), streamed; once the batch has ended, its output (error) file. The headers say which.
  app.get<{ Params: { id: string }; Querystring: Record<string, unknown> }>('/batches/:id/results', async (request, reply) => {
    const errors = optionalBoolean(asFields(request.query), 'errors') ?? false;
    const results = await batches.resultsSoFar(request.principal, internalBatchId(request.params.id), errors ? 'errors' : 'output');
    return reply
      .type('application/jsonl')
      .header('x-spool-batch-status', results.batch.status)
      .header('x-spool-results-complete', String(results.complete))
      .header('cache-control', 'no-store')
      .send(Readable.from(results.stream));
  });

  // A Spool extension for the dashboard's charts (both prefixes).
  app.get<{ Params: { id: string } }>('/batches/:id/stats', async (request) => {
    const stats = await batches.stats(request.principal, internalBatchId(request.params.id));
    return {
      object: 'batch.stats',
      id: stats.batch.id,
      started_at: unixSeconds(stats.startAt),
      bucket_seconds: stats.bucketMs / 1000,
      finished: stats.finished.map((entry) => ({ offset_seconds: (entry.bucket * stats.bucketMs) / 1000, succeeded: entry.succeeded, failed: entry.failed })),
      latency_ms: { bounds: LATENCY_BOUNDS_MS, counts: stats.latency },
      errors: stats.errors,
    };
  });

  // Admin keys may add ?user_id=NAME (that user's batches) or ?user_id=* (everyone's); without it, anyone lists their own.
  app.get('/batches', async (request) => {
    const query = asFields(request.query);
    const forUser = optionalString(query, 'user_id');
    if (request.dialect === 'together') {
      const rows = await batches.list(request.principal, TOGETHER_LIST_LIMIT, undefined, forUser);
      return rows.slice(0, TOGETHER_LIST_LIMIT).map((row) => presentBatch('together', row));
    }
    const limit = queryInteger(query, 'limit', { min: 1, max: 100, fallback: 20 });
    const rows = await batches.list(request.principal, limit, optionalString(query, 'after'), forUser);
    const page = rows.slice(0, limit);
    return {
      object: 'list',
      data: page.map((row) => presentBatch('openai', row)),
      first_id: page[0]?.id ?? null,
      last_id: page.at(-1)?.id ?? null,
      has_more: rows.length > limit,
    };
  });

  app.post<{ Params: { id: string } }>('/batches/:id/cancel', async (request) =>
    presentBatch(request.dialect, await batches.cancel(request.principal, internalBatchId(request.params.id))),
  );

  // A new batch of the original's failed lines; answered like a create (it is one), in the caller's dialect.
  app.post<{ Params: { id: string } }>('/batches/:id/retry', async (request, reply) => {
    const batch = await batches.retry(request.principal.userId, internalBatchId(request.params.id), request.dialect);
    if (request.dialect === 'openai') return reply.status(200).send(presentBatch('openai', batch));
    return reply.status(201).send({ job: presentBatch('together', batch), warning: null });
  });
}
