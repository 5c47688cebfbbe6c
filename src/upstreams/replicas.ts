// The servers behind the configured upstream entries. An entry is one server
// (`baseUrl`) or a pool of several (`replicas`); everything that talks to a
// server (its client, adaptive limit, health, shared ceiling, discovered
// models, metrics) is per replica, keyed by the replica's unique name. A
// single-server entry's replica keeps the entry's name, so its metrics, shared
// ceiling rows and admin status read as before pools existed.
import { replicaNamesOf, type UpstreamConfig } from '../config.ts';

export interface UpstreamReplica {
  /** Unique across every entry: the entry's name for a single server, else the replica's name or "<entry>-<n>". */
  name: string;
  /** The entry it belongs to. */
  entry: string;
  baseUrl: string;
  apiKey?: string;
  weight: number;
  maxConcurrency: number;
  initialConcurrency?: number;
  requestsPerMinute?: number;
  tokensPerMinute?: number;
  models: UpstreamConfig['models'];
  modelsRefreshSeconds?: number;
  healthPath: string;
  sendPriority: boolean;
  /** It answers Anthropic Messages requests at its own /v1/messages; otherwise they are translated to chat completions. */
  messagesApi?: boolean;
  /**
   * It may share its models with other servers (its entry lists several, or another entry names one of the same
   * models, or both discover theirs): answers that say it is broken (5xx, timeouts) take it out too.
   */
  pooled: boolean;
}

const cache = new WeakMap<readonly UpstreamConfig[], UpstreamReplica[]>();

/** Every replica of every entry, in configuration order; the same array for the same config. */
export function replicasOf(upstreams: readonly UpstreamConfig[]): UpstreamReplica[] {
  let replicas = cache.get(upstreams);
  if (!replicas) {
    replicas = upstreams.flatMap((upstream) => replicasOfEntry(upstream).map((replica) => ({ ...replica, pooled: replica.pooled || sharesModels(upstream, upstreams) })));
    cache.set(upstreams, replicas);
  }
  return replicas;
}

/**
 * Whether another entry names one of `upstream`'s models exactly too, so that router.ts pools them. Entries of
 * `models: "auto"` are judged alone here (what they list is known only at run time): only their own replicas
 * make them a pool, and a lone server of models nobody else lists is never taken out for its 5xx answers.
 */
function sharesModels(upstream: UpstreamConfig, upstreams: readonly UpstreamConfig[]): boolean {
  const names = exactNames(upstream);
  if (names.length === 0) return false;
  return upstreams.some((other) => other !== upstream && exactNames(other).some((name) => names.includes(name)));
}

function exactNames(upstream: UpstreamConfig): string[] {
  return upstream.models === 'auto' ? [] : upstream.models.filter((name) => !name.includes('*') && !name.includes('?'));
}

export function replicasOfEntry(upstream: UpstreamConfig): UpstreamReplica[] {
  const shared = {
    entry: upstream.name,
    models: upstream.models,
    modelsRefreshSeconds: upstream.modelsRefreshSeconds,
    requestsPerMinute: upstream.requestsPerMinute,
    tokensPerMinute: upstream.tokensPerMinute,
    healthPath: upstream.healthPath,
    sendPriority: upstream.sendPriority,
    messagesApi: upstream.messagesApi,
  };
  if (!upstream.replicas) {
    // The schema allows an entry without replicas only with a baseUrl.
    const baseUrl = upstream.baseUrl as string;
    return [
      {
        ...shared,
        name: upstream.name,
        baseUrl,
        apiKey: upstream.apiKey,
        weight: upstream.weight,
        maxConcurrency: upstream.maxConcurrency,
        initialConcurrency: upstream.initialConcurrency,
        pooled: false,
      },
    ];
  }
  const pooled = upstream.replicas.length > 1;
  const names = replicaNamesOf(upstream);
  return upstream.replicas.map((replica, index) => ({
    ...shared,
    name: names[index],
    baseUrl: replica.baseUrl,
    apiKey: replica.apiKey ?? upstream.apiKey,
    weight: replica.weight ?? upstream.weight,
    maxConcurrency: replica.maxConcurrency ?? upstream.maxConcurrency,
    initialConcurrency: replica.initialConcurrency ?? upstream.initialConcurrency,
    pooled,
  }));
}

/** Several `--upstream URL` flags: one entry serving every model, a replica per URL. */
export function upstreamsFromUrls(urls: readonly string[]): Array<Record<string, unknown>> | undefined {
  if (urls.length === 0) return undefined;
  if (urls.length === 1) return [{ name: 'default', baseUrl: urls[0], models: ['*'] }];
  return [{ name: 'default', replicas: urls.map((baseUrl) => ({ baseUrl })), models: ['*'] }];
}
