// Decides who serves a model name: a pool of configured upstream replicas,
// the embedded engine, or the built-in echo emulator. The worker asks once per
// request line, so the answer is cached per model name; a batch usually names
// one model thousands of times, while glob matching over every upstream's
// list would be repeated work for the same answer.
//
// A model's pool is every replica of every entry that names the model exactly,
// plus every replica of a `models: "auto"` entry that lists it: naming a model
// is a claim to serve it, so four vLLM servers listed (or discovering) the same
// model share its lines. When no entry names it, the first entry whose glob
// matches serves it, as a fallback ("*" last catches the rest).
import type { UpstreamConfig } from '../config.ts';
import type { ModelDiscovery } from './model-discovery.ts';
import { replicasOf, type UpstreamReplica } from './replicas.ts';

export interface UpstreamPool {
  /** Its replicas' names joined: one pool object per distinct set, whatever the model. */
  key: string;
  replicas: UpstreamReplica[];
  /** Place requests that share a prefix on the same replica (prefix-key.ts, pool-placement.ts). */
  affinity: boolean;
}

export type Route = { kind: 'upstream'; pool: UpstreamPool } | { kind: 'echo' } | { kind: 'engine' };

export interface ModelRouterOptions {
  /** Model names served by the embedded engine; matched exactly. */
  engineModels?: string[];
  /** Most model names whose route is remembered; default 1024. */
  cacheSize?: number;
  /** What `models: "auto"` upstreams serve; without it such an upstream serves nothing. */
  discovery?: ModelDiscovery;
}

const DEFAULT_CACHE_SIZE = 1024;

// Shared, frozen answers: callers compare `kind`, and nothing about these two
// routes varies by model name.
const ECHO_ROUTE: Route = Object.freeze({ kind: 'echo' });
const ENGINE_ROUTE: Route = Object.freeze({ kind: 'engine' });

type Matcher = (model: string) => boolean;

interface Entry {
  config: UpstreamConfig;
  replicas: UpstreamReplica[];
  /** Its models name `model` exactly (not by a glob). */
  names: (model: string) => boolean;
  /** Its globs match `model`. */
  matches: Matcher;
}

export class ModelRouter {
  private readonly entries: Entry[];
  private readonly engineModels: ReadonlySet<string>;
  private readonly cacheSize: number;
  // Map keeps insertion order, which makes it a cheap LRU: a hit is re-inserted
  // at the end, and eviction drops the first (least recently used) key.
  private readonly cache = new Map<string, Route | null>();
  private readonly pools = new Map<string, Route>();
  private readonly discovery: ModelDiscovery | undefined;
  private seenVersion = 0;

  constructor(upstreams: readonly UpstreamConfig[], options: ModelRouterOptions = {}) {
    this.discovery = options.discovery;
    // Patterns are compiled once here, not per lookup.
    const all = replicasOf(upstreams);
    this.entries = upstreams.map((config) => {
      const replicas = all.filter((replica) => replica.entry === config.name);
      if (config.models === 'auto') return { config, replicas, names: () => false, matches: () => false };
      const exact = new Set(config.models.filter((pattern) => !isGlob(pattern)));
      return { config, replicas, names: (model: string) => exact.has(model), matches: anyOf(config.models.map(compilePattern)) };
    });
    this.engineModels = new Set(options.engineModels ?? []);
    const cacheSize = options.cacheSize ?? DEFAULT_CACHE_SIZE;
    if (!Number.isInteger(cacheSize) || cacheSize < 0) throw new RangeError(`cacheSize must be a non-negative integer, got ${cacheSize}`);
    this.cacheSize = cacheSize;
  }

  /** Who serves `model`, or null when nobody does (the caller fails the line with invalid_model). */
  route(model: string): Route | null {
    // A discovered list changed: every remembered answer may be stale (a miss may now match).
    if (this.discovery && this.discovery.version !== this.seenVersion) {
      this.seenVersion = this.discovery.version;
      this.cache.clear();
    }
    const cached = this.cache.get(model);
    if (cached !== undefined) {
      this.cache.delete(model);
      this.cache.set(model, cached);
      return cached;
    }
    const route = this.resolve(model);
    // Misses (null) are cached too: a batch full of a misspelt model name
    // would otherwise re-scan every pattern for each of its lines.
    if (this.cacheSize > 0) {
      if (this.cache.size >= this.cacheSize) this.cache.delete(this.cache.keys().next().value as string);
      this.cache.set(model, route);
    }
    return route;
  }

  private resolve(model: string): Route | null {
    // Configured upstreams come first so an operator can take over any name,
    // echo included, by listing it (or "*") on an upstream.
    const named: Entry[] = [];
    const replicas: UpstreamReplica[] = [];
    for (const entry of this.entries) {
      if (entry.names(model)) {
        named.push(entry);
        replicas.push(...entry.replicas);
      } else if (entry.config.models === 'auto') {
        const listing = entry.replicas.filter((replica) => this.discovery?.modelsOf(replica.name)?.has(model));
        if (listing.length > 0) named.push(entry);
        replicas.push(...listing);
      }
    }
    if (replicas.length > 0) return this.poolOf(named, replicas);
    const fallback = this.entries.find((entry) => entry.matches(model));
    if (fallback) return this.poolOf([fallback], fallback.replicas);
    if (this.engineModels.has(model)) return ENGINE_ROUTE;
    if (isEchoModel(model)) return ECHO_ROUTE;
    return null;
  }

  private poolOf(entries: Entry[], replicas: UpstreamReplica[]): Route {
    const key = replicas.map((replica) => replica.name).join(',');
    let route = this.pools.get(key);
    if (!route) {
      // The first entry that says decides; unsaid, affinity pays off only where there is a choice of replica.
      const affinity = entries.find((entry) => entry.config.affinity !== undefined)?.config.affinity ?? (replicas.length > 1 ? 'prefix' : 'none');
      route = { kind: 'upstream', pool: { key, replicas, affinity: affinity === 'prefix' && replicas.length > 1 } };
      this.pools.set(key, route);
    }
    return route;
  }
}

/** The echo emulator answers `echo` and any `echo-…` / `echo/…` variant, so tests can label their traffic. */
export function isEchoModel(model: string): boolean {
  return model === 'echo' || model.startsWith('echo-') || model.startsWith('echo/');
}

/**
 * A `models` entry: an exact name, or a glob where `*` matches any run of
 * characters (including none and including "/") and `?` exactly one.
 * Matching is case-sensitive because model names are (HF repo ids are).
 */
export function compilePattern(pattern: string): Matcher {
  if (!isGlob(pattern)) return (model) => model === pattern;
  if (/^\*+$/.test(pattern)) return () => true;
  let source = '';
  for (const char of pattern) {
    if (char === '*') source += '.*';
    else if (char === '?') source += '.';
    else source += char.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  // "s" so that "*" and "?" also span line breaks: a glob should never be
  // surprised by an odd character in a name. "u" so "?" is one code point.
  const regex = new RegExp(`^${source}$`, 'su');
  return (model) => regex.test(model);
}

function isGlob(pattern: string): boolean {
  return pattern.includes('*') || pattern.includes('?');
}

function anyOf(matchers: Matcher[]): Matcher {
  if (matchers.length === 1) return matchers[0];
  return (model) => matchers.some((matches) => matches(model));
}
