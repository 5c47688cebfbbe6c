// Starts a whole Spool process: store, HTTP API, lifecycle sweeps, webhook
// deliveries (and, when the worker is enabled, the runner). `spool serve` and the tests both use it.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildServer } from './api/server.ts';
import { presentBatch } from './api/presenters/index.ts';
import type { BatchRow } from './store/sql/schema.ts';
import { startOpsServer } from './api/ops-server.ts';
import { AdminStatusBuilder } from './api/admin-status.ts';
import { createApiKey, hasAnyActiveKey, KeyVerifier } from './auth/keys.ts';
import type { LifecycleContext } from './runtime/context.ts';
import { WorkerLiveness } from './runtime/liveness.ts';
import { loggerOptions } from './runtime/log-options.ts';
import { BatchService } from './batches/service.ts';
import { LifecycleSweeper } from './batches/sweeper.ts';
import { metricsAuthFor, type Config } from './config.ts';
import { FileService } from './files/service.ts';
import { createSpoolMetrics } from './metrics/spool-metrics.ts';
import { newWorkerId } from './ids.ts';
import { openStore, type Store } from './store/index.ts';
import { Runner } from './runner/runner.ts';
import { upgradeV1Batches } from './batches/upgrade-v1.ts';
import type { Engine } from './upstreams/engine/index.ts';
import { RealtimeGateway } from './upstreams/realtime.ts';
import { UpstreamCapacities } from './upstreams/capacity/upstream-capacity.ts';
import { ModelDiscovery } from './upstreams/model-discovery.ts';
import { getUploadSigningSecret } from './store/sql/settings.ts';
import { startWebhookDispatcher } from './webhooks/deliver.ts';
import { closeServer } from './api/close-server.ts';

export interface SpoolApp {
  url: string;
  server: FastifyInstance;
  /** Undefined when worker.enabled is false (an API-only process). */
  runner?: Runner;
  store: Store;
  /** Set when this start created the first API key: where its copy was saved, or why it could not be. */
  initialKey?: { key: string; path?: string; saveError?: string };
  close(): Promise<void>;
}

export async function startSpool(config: Config): Promise<SpoolApp> {
  // Models load first: one that cannot load stops start-up with its reason, never a batch half-way.
  const engine = await startEngine(config);
  let store: Store | undefined;
  try {
    store = await openStore(config);
    return await startOnStore(config, store, engine);
  } catch (err) {
    await store?.close();
    await engine?.close();
    throw err;
  }
}

// Loaded whenever models are configured, worker or not: an API-only process
// still answers real-time requests with them. One load per process, shared by
// the runner's engine lane and the real-time routes.
// The whisper model only where batches run: no real-time route serves audio.
async function startEngine(config: Config): Promise<Engine | undefined> {
  const whisper = config.worker.enabled ? config.engine.whisper : undefined;
  if (config.engine.models.length === 0 && !whisper) return undefined;
  const { createEngine } = await import('./upstreams/engine/index.ts');
  return createEngine({ models: config.engine.models, gpu: config.engine.gpu, whisper });
}

async function startOnStore(config: Config, store: Store, engine: Engine | undefined): Promise<SpoolApp> {
  const signingSecret = config.uploads.signingSecret ?? (await getUploadSigningSecret(store.sql.db));
  const files = new FileService(store, {
    maxFileBytes: config.limits.maxFileBytes,
    signedUrlTtlSeconds: config.uploads.signedUrlTtlSeconds,
    signingSecret,
  });
  const batches = new BatchService(store, {
    maxEnqueuedTokensPerModel: config.limits.maxEnqueuedTokensPerModel,
    defaultOutputExpiresAfterSeconds: config.limits.defaultOutputExpiresAfterSeconds,
    billing: config.billing,
  });
  // One capacity per upstream for this process: the runner's lanes and the real-time routes drive it together.
  const capacities = new UpstreamCapacities();
  // Likewise one list of what `models: "auto"` upstreams serve; asked once the server (and its log) exists,
  // before anything routes.
  const discoveryLog = { warn: (obj: object, msg?: string) => server.log.warn(obj, msg) };
  const discovery = new ModelDiscovery(config.upstreams, discoveryLog);
  const gateway = new RealtimeGateway({ upstreams: config.upstreams, engine, capacities, discovery });
  let runner: Runner | undefined;
  // Like the admin status, metrics read the runner (and log through the server) per scrape, after both exist.
  const metrics = config.metrics.enabled
    ? createSpoolMetrics({
        sql: store.sql,
        runnerStats: () => runner?.stats(),
        log: { warn: (obj, msg) => server.log.warn(obj, msg) },
        cacheMs: config.metrics.cacheSeconds * 1000,
      })
    : undefined;
  const server = await buildServer({
    store,
    files,
    batches,
    verifier: new KeyVerifier(store.sql.db, config.adminKey),
    publicUrl: config.publicUrl,
    defaultCompletionWindow: config.limits.defaultCompletionWindow,
    priorityBounds: config.limits.priority,
    logger: loggerOptions(config),
    inference: { gateway, timeoutMs: config.worker.requestTimeoutMs },
    messageBatches: config.messageBatches,
    // The runner starts once the server listens; the status reads it per request (none until then).
    admin: { status: new AdminStatusBuilder(config.upstreams, engine?.models, discovery), runnerStats: () => runner?.stats() },
    metrics: metrics && { registry: metrics, auth: metricsAuthFor(config) },
    runnerStats: () => runner?.stats(),
  });
  await discovery.start();
  const initialKey = await ensureSomeKey(config, store);
  const ctx: LifecycleContext = { store, config, workerId: newWorkerId(), presentBatch: presentBatchInItsDialect, log: server.log, metrics: metrics?.lifecycle };
  let sweeper: LifecycleSweeper | undefined;
  server.addHook('onResponse', async (request, reply) => {
    if (request.method !== 'POST' || reply.statusCode >= 300) return;
    const path = request.url.split('?')[0];
    // A new (created or retried) or cancelled batch is picked up now rather than at the next poll,
    // and a cancel stops this process's queued and in-flight work for the batch now, not at the next status check.
    if (/\/batches(\/[^/]+\/(cancel|retry))?$/.test(path)) sweeper?.poke();
    if (/\/batches\/[^/]+\/cancel$/.test(path)) runner?.checkBatches();
  });
  // Listening first: a port already taken stops start-up before any background loop has claimed work.
  try {
    await server.listen({ host: config.host, port: config.port });
  } catch (err) {
    discovery.stop();
    await Promise.all([closeServer(server), gateway.close()]);
    throw err;
  }
  // Registered before any loop claims work, taking over what processes found dead held (this data dir's previous
  // life, after a crash) so it runs now rather than after their leases lapse.
  let liveness: WorkerLiveness;
  try {
    liveness = await new WorkerLiveness(ctx, { role: 'serve', onReaped: () => wakeLoops(ctx) }).start();
  } catch (err) {
    discovery.stop();
    await Promise.all([closeServer(server), gateway.close()]);
    throw err;
  }
  // Batches stored by the per-line design become chunks before anything runs or sweeps them (batches/upgrade-v1.ts).
  await upgradeV1Batches(ctx).catch(async (err: unknown) => {
    discovery.stop();
    await Promise.all([closeServer(server), gateway.close()]);
    await liveness.stop();
    throw err;
  });
  runner = config.worker.enabled ? new Runner(ctx, { engine, capacities, discovery }).start() : undefined;
  ctx.onRunnable = () => runner?.poke();
  const lifecycle = new LifecycleSweeper(ctx).start();
  sweeper = lifecycle;
  ctx.onBatchDrained = () => lifecycle.poke();
  let webhooks: Awaited<ReturnType<typeof startWebhookDispatcher>>;
  try {
    webhooks = await startWebhookDispatcher(ctx);
  } catch (err) {
    await Promise.all([closeServer(server), gateway.close(), runner?.stop(), lifecycle.stop()]);
    await liveness.stop();
    discovery.stop();
    throw err;
  }
  const address = server.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  let closed = false;
  return {
    url: `http://${host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host}:${port}`,
    server,
    runner,
    store,
    initialKey,
    async close() {
      if (closed) return;
      closed = true;
      // Real-time requests in flight get the runner's grace period too, then are ended, so server.close() never waits on a long generation.
      const graceMs = config.worker.shutdownGraceSeconds * 1000;
      await Promise.all([closeServer(server, graceMs), gateway.close(graceMs)]);
      await runner?.stop();
      await lifecycle.stop();
      await webhooks.stop();
      await liveness.stop();
      discovery.stop();
      await store.close();
      await engine?.close();
    },
  };
}

/** What a batch's webhook events carry: the batch object in the dialect it was created in. */
const presentBatchInItsDialect = (batch: BatchRow): unknown => presentBatch(batch.dialect, batch);

/** After another process's work was handed back: claim it now, and finalize batches it may have been holding up. */
function wakeLoops(ctx: LifecycleContext): void {
  ctx.onRunnable?.();
  ctx.onBatchDrained?.();
}

/**
 * First start with no key at all and no SPOOL_ADMIN_KEY: mint one so the service is usable, print it once, and
 * keep a copy readable only by us. The copy goes in the data dir, which a PostgreSQL + S3 deployment may never
 * have created: it is made here, and when it cannot be written the key is still printed (with why), never lost
 * between a database that holds it and a file that does not.
 */
async function ensureSomeKey(config: Config, store: Store): Promise<SpoolApp['initialKey']> {
  if (config.adminKey || (await hasAnyActiveKey(store.sql.db))) return undefined;
  const minted = await createApiKey(store.sql.db, 'default', true);
  const path = join(config.dataDir, 'initial-api-key');
  try {
    mkdirSync(config.dataDir, { recursive: true });
    writeFileSync(path, `${minted.key}\n`, { mode: 0o600 });
    return { key: minted.key, path };
  } catch (err) {
    return { key: minted.key, saveError: `${path}: ${(err as Error).message}` };
  }
}

export interface SpoolWorker {
  runner: Runner;
  store: Store;
  /** Where /metrics, /healthz and /readyz are served, when metrics.workerPort is set. */
  opsUrl?: string;
  close(): Promise<void>;
}

/** `spool worker`: runs batch requests and the lifecycle sweeps, with no HTTP API (scale-out role). */
export async function startWorker(config: Config, log: LifecycleContext['log']): Promise<SpoolWorker> {
  const engine = await startEngine(config);
  let store: Store | undefined;
  try {
    store = await openStore(config);
    return await startWorkerOnStore(config, store, engine, log);
  } catch (err) {
    await store?.close();
    await engine?.close();
    throw err;
  }
}

async function startWorkerOnStore(config: Config, store: Store, engine: Engine | undefined, log: LifecycleContext['log']): Promise<SpoolWorker> {
  const serveOps = config.metrics.workerPort !== undefined;
  // Read per scrape: the listener is up (so a taken port fails start-up) before the runner claims any work.
  let runner: Runner | undefined;
  const metrics =
    serveOps && config.metrics.enabled
      ? createSpoolMetrics({ sql: store.sql, runnerStats: () => runner?.stats(), log, cacheMs: config.metrics.cacheSeconds * 1000 })
      : undefined;
  const ops = serveOps
    ? await startOpsServer({
        store,
        verifier: new KeyVerifier(store.sql.db, config.adminKey),
        metrics: metrics && { registry: metrics, auth: metricsAuthFor(config) },
        runnerStats: () => runner?.stats(),
        host: config.host,
        port: config.metrics.workerPort!,
        logger: loggerOptions(config),
      })
    : undefined;
  const ctx: LifecycleContext = { store, config, workerId: newWorkerId(), presentBatch: presentBatchInItsDialect, log, metrics: metrics?.lifecycle };
  const liveness = await new WorkerLiveness(ctx, { role: 'worker', onReaped: () => wakeLoops(ctx) }).start().catch(async (err: unknown) => {
    if (ops) await closeServer(ops.server);
    throw err;
  });
  // Batches stored by the per-line design become chunks before anything runs or sweeps them (batches/upgrade-v1.ts).
  await upgradeV1Batches(ctx).catch(async (err: unknown) => {
    if (ops) await closeServer(ops.server);
    await liveness.stop();
    throw err;
  });
  const discovery = await new ModelDiscovery(config.upstreams, log).start();
  const started = new Runner(ctx, { engine, discovery }).start();
  runner = started;
  ctx.onRunnable = () => started.poke();
  const sweeper = new LifecycleSweeper(ctx).start();
  ctx.onBatchDrained = () => sweeper.poke();
  let webhooks: Awaited<ReturnType<typeof startWebhookDispatcher>>;
  try {
    webhooks = await startWebhookDispatcher(ctx);
  } catch (err) {
    await Promise.all([ops && closeServer(ops.server), started.stop(), sweeper.stop()]);
    await liveness.stop();
    discovery.stop();
    throw err;
  }
  let closed = false;
  return {
    runner: started,
    store,
    opsUrl: ops?.url,
    async close() {
      if (closed) return;
      closed = true;
      if (ops) await closeServer(ops.server);
      await started.stop();
      await sweeper.stop();
      await webhooks.stop();
      await liveness.stop();
      discovery.stop();
      await store.close();
      await engine?.close();
    },
  };
}
