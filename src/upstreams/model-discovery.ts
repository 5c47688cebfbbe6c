// Which models each `models: "auto"` upstream serves, from its own
// GET /v1/models: asked at start, every modelsRefreshSeconds (300) after, and
// at once (at most every 5 s per upstream) when a line names a model nobody
// serves, so a model added to a vLLM server is routable without a restart.
// One per process, shared by every router (runner, real-time, admin status);
// routers drop their cached answers when `version` moves. A server that does
// not answer keeps the list it gave last (logged), never an empty one.
import type { UpstreamConfig } from '../config.ts';
import { replicasOf, type UpstreamReplica } from './replicas.ts';
import { getFromUpstream } from './upstream-get.ts';

const DEFAULT_REFRESH_MS = 300_000;
const MISS_REFRESH_MIN_MS = 5_000;
const ASK_TIMEOUT_MS = 10_000;
// A model list is a few KB; thousands of models fit in this.
const MAX_LIST_BYTES = 4 * 1024 * 1024;

// Each replica of a pool is asked on its own: one may serve a model the others do not (yet).
interface Entry {
  upstream: UpstreamReplica;
  models: ReadonlySet<string> | undefined;
  askedAt: number;
  asking: Promise<void> | undefined;
}

export class ModelDiscovery {
  private readonly entries = new Map<string, Entry>();
  private timers: NodeJS.Timeout[] = [];
  /** Moves whenever some upstream's list changed. */
  version = 0;

  constructor(
    upstreams: readonly UpstreamConfig[],
    private readonly log: { warn(obj: object, msg?: string): void } = { warn: () => undefined },
  ) {
    for (const upstream of replicasOf(upstreams)) {
      if (upstream.models === 'auto') this.entries.set(upstream.name, { upstream, models: undefined, askedAt: 0, asking: undefined });
    }
  }

  get active(): boolean {
    return this.entries.size > 0;
  }

  /** Asks every auto upstream now, then every its refresh interval. */
  async start(): Promise<this> {
    await this.refreshAll();
    for (const entry of this.entries.values()) {
      const every = (entry.upstream.modelsRefreshSeconds ?? DEFAULT_REFRESH_MS / 1000) * 1000;
      const timer = setInterval(() => void this.ask(entry), every);
      timer.unref();
      this.timers.push(timer);
    }
    return this;
  }

  stop(): void {
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
  }

  /** The models the replica named `upstream` last listed; undefined before it first answered. */
  modelsOf(upstream: string): ReadonlySet<string> | undefined {
    return this.entries.get(upstream)?.models;
  }

  /** A line named a model nobody serves: ask again, unless asked in the last few seconds. Resolves when done. */
  async refreshOnMiss(): Promise<void> {
    const now = Date.now();
    await Promise.all([...this.entries.values()].filter((entry) => now - entry.askedAt >= MISS_REFRESH_MIN_MS).map((entry) => this.ask(entry)));
  }

  private refreshAll(): Promise<void> {
    return Promise.all([...this.entries.values()].map((entry) => this.ask(entry))).then(() => undefined);
  }

  private ask(entry: Entry): Promise<void> {
    entry.asking ??= this.fetchModels(entry).finally(() => {
      entry.asking = undefined;
    });
    return entry.asking;
  }

  private async fetchModels(entry: Entry): Promise<void> {
    entry.askedAt = Date.now();
    const { upstream } = entry;
    const url = `${upstream.baseUrl.replace(/\/+$/, '')}/models`;
    try {
      const { status, text } = await getFromUpstream(url, { apiKey: upstream.apiKey, timeoutMs: ASK_TIMEOUT_MS, maxBytes: MAX_LIST_BYTES });
      if (status !== 200) throw new Error(`HTTP ${status}`);
      if (text === undefined) throw new Error(`the list is over ${MAX_LIST_BYTES} bytes`);
      const body = JSON.parse(text) as { data?: Array<{ id?: unknown }> };
      if (!Array.isArray(body.data)) throw new Error('the answer has no "data" list');
      const models = new Set(body.data.map((item) => item?.id).filter((id): id is string => typeof id === 'string' && id !== ''));
      if (!sameSet(models, entry.models)) {
        entry.models = models;
        this.version += 1;
      }
    } catch (err) {
      this.log.warn({ upstream: upstream.name, url, err: (err as Error).message }, 'asking an upstream which models it serves failed; its last list stays');
    }
  }
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string> | undefined): boolean {
  return b !== undefined && a.size === b.size && [...a].every((item) => b.has(item));
}
