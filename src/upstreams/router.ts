// Decides who serves a model name: a configured upstream, the embedded engine,
// or the built-in echo emulator. The worker asks once per request line, so the
// answer is cached per model name; a batch usually names one model thousands
// of times, while glob matching over every upstream's list would be repeated
// work for the same answer.
import type { UpstreamConfig } from '../config.ts';
import type { ModelDiscovery } from './model-discovery.ts';

export type Route = { kind: 'upstream'; upstream: UpstreamConfig } | { kind: 'echo' } | { kind: 'engine' };

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

export class ModelRouter {
  private readonly upstreams: { matches: Matcher; route: Route }[];
  private readonly engineModels: ReadonlySet<string>;
  private readonly cacheSize: number;
  // Map keeps insertion order, which makes it a cheap LRU: a hit is re-inserted
  // at the end, and eviction drops the first (least recently used) key.
  private readonly cache = new Map<string, Route | null>();
  private readonly discovery: ModelDiscovery | undefined;
  private seenVersion = 0;

  constructor(upstreams: UpstreamConfig[], options: ModelRouterOptions = {}) {
    const discovery = options.discovery;
    this.discovery = discovery;
    // Patterns are compiled once here, not per lookup; an "auto" upstream matches what it last listed.
    this.upstreams = upstreams.map((upstream) => ({
      matches:
        upstream.models === 'auto'
          ? (model: string) => discovery?.modelsOf(upstream.name)?.has(model) ?? false
          : anyOf(upstream.models.map(compilePattern)),
      route: { kind: 'upstream', upstream },
    }));
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
    for (const upstream of this.upstreams) {
      if (upstream.matches(model)) return upstream.route;
    }
    if (this.engineModels.has(model)) return ENGINE_ROUTE;
    if (isEchoModel(model)) return ECHO_ROUTE;
    return null;
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
  if (!pattern.includes('*') && !pattern.includes('?')) return (model) => model === pattern;
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

function anyOf(matchers: Matcher[]): Matcher {
  if (matchers.length === 1) return matchers[0];
  return (model) => matchers.some((matches) => matches(model));
}
