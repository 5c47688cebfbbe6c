// What an inference engine says about its own load, when it says anything:
// llama.cpp's GET /props (total_slots) and GET /metrics (with --metrics:
// requests processing and deferred), or GET /slots (with --slots); vLLM's and
// SGLang's Prometheus GET /metrics (requests running and waiting, KV-cache
// use). The knee finder starts from the slots and keeps the engine's own queue
// short with the rest. Never required: an upstream behind a gateway, or one
// that answers these with 401/404/501, is asked again only rarely, and the
// knee finder goes by throughput and latency alone.
//
// Cheap: at most one GET of /metrics (or /slots) per `intervalMs`, and only
// while someone asks (the knee finder asks while requests run); /props once
// every ten minutes. Each answer is bounded in size and time.
import { getFromUpstream } from '../upstream-get.ts';

export interface EngineReport {
  engine: 'llama.cpp' | 'vllm' | 'sglang';
  /** Requests the engine runs at once (llama.cpp total_slots); undefined when it does not say. */
  slots?: number;
  running?: number;
  /** Requests accepted but waiting for a slot or a batch place (deferred / waiting / queued). */
  waiting?: number;
  /** 0..1 */
  kvCacheUsage?: number;
  /** When this was read (ms). */
  at: number;
}

export interface EngineProbeOptions {
  baseUrl: string;
  apiKey?: string;
  /** Least time between two reads of the engine's load; default 1000 ms. */
  intervalMs?: number;
  now?: () => number;
}

const PROPS_EVERY_MS = 10 * 60_000;
// An endpoint that answered with anything but a usable 200 is left alone this long.
const UNAVAILABLE_FOR_MS = 10 * 60_000;
const TIMEOUT_MS = 1_000;
const MAX_BODY_BYTES = 256 * 1024;

type Endpoint = '/props' | '/metrics' | '/slots';

export class EngineProbe {
  private readonly origin: string;
  private readonly intervalMs: number;
  private readonly now: () => number;
  private readonly unavailableUntil = new Map<Endpoint, number>();
  private latest: EngineReport | undefined;
  private slots: number | undefined;
  private propsReadAt = Number.NEGATIVE_INFINITY;
  private loadReadAt = Number.NEGATIVE_INFINITY;
  private reading: Promise<void> | undefined;

  constructor(private readonly options: EngineProbeOptions) {
    // The engine's own endpoints sit at the root, beside /v1.
    const url = new URL(options.baseUrl);
    url.pathname = url.pathname.replace(/\/+$/, '').replace(/\/v1$/, '');
    this.origin = url.toString().replace(/\/+$/, '');
    this.intervalMs = options.intervalMs ?? 1_000;
    this.now = options.now ?? Date.now;
  }

  /** The last report, or undefined when the engine has said nothing (yet, or ever). */
  report(): EngineReport | undefined {
    return this.latest;
  }

  /** Reads the engine's load again unless it was read within intervalMs; never throws. */
  refresh(): Promise<void> {
    const now = this.now();
    if (this.reading || now - this.loadReadAt < this.intervalMs) return this.reading ?? Promise.resolve();
    this.loadReadAt = now;
    this.reading = this.read().finally(() => (this.reading = undefined));
    return this.reading;
  }

  private async read(): Promise<void> {
    if (this.now() - this.propsReadAt >= PROPS_EVERY_MS) {
      this.propsReadAt = this.now();
      const props = await this.getJson('/props');
      const total = (props as { total_slots?: unknown } | undefined)?.total_slots;
      if (typeof total === 'number' && Number.isInteger(total) && total > 0) this.slots = total;
    }
    const metrics = await this.getText('/metrics');
    let report = metrics === undefined ? undefined : parseMetrics(metrics, this.now());
    if (!report && this.slots !== undefined) {
      // llama.cpp without --metrics: /slots (with --slots) still says how many are busy.
      const slots = await this.getJson('/slots');
      const running = Array.isArray(slots) ? slots.filter((slot) => (slot as { is_processing?: unknown })?.is_processing === true).length : undefined;
      report = { engine: 'llama.cpp', running, at: this.now() };
    }
    if (!report && this.slots !== undefined) report = { engine: 'llama.cpp', at: this.now() };
    if (report && this.slots !== undefined && report.engine === 'llama.cpp') report.slots = this.slots;
    this.latest = report;
  }

  private async getText(endpoint: Endpoint): Promise<string | undefined> {
    if ((this.unavailableUntil.get(endpoint) ?? 0) > this.now()) return undefined;
    try {
      const { status, text } = await getFromUpstream(`${this.origin}${endpoint}`, { apiKey: this.options.apiKey, timeoutMs: TIMEOUT_MS, maxBytes: MAX_BODY_BYTES });
      if (status !== 200 || text === undefined) {
        this.unavailableUntil.set(endpoint, this.now() + UNAVAILABLE_FOR_MS);
        return undefined;
      }
      return text;
    } catch {
      this.unavailableUntil.set(endpoint, this.now() + UNAVAILABLE_FOR_MS);
      return undefined;
    }
  }

  private async getJson(endpoint: Endpoint): Promise<unknown> {
    const text = await this.getText(endpoint);
    if (text === undefined) return undefined;
    try {
      return JSON.parse(text);
    } catch {
      this.unavailableUntil.set(endpoint, this.now() + UNAVAILABLE_FOR_MS);
      return undefined;
    }
  }
}

// The gauges each engine exports, summed over their label sets (vLLM labels them by model).
const GAUGES: Record<EngineReport['engine'], { running: string[]; waiting: string[]; kv: string[] }> = {
  'llama.cpp': { running: ['llamacpp:requests_processing'], waiting: ['llamacpp:requests_deferred'], kv: ['llamacpp:kv_cache_usage_ratio'] },
  vllm: { running: ['vllm:num_requests_running'], waiting: ['vllm:num_requests_waiting'], kv: ['vllm:gpu_cache_usage_perc', 'vllm:kv_cache_usage_perc'] },
  sglang: { running: ['sglang:num_running_reqs'], waiting: ['sglang:num_queue_reqs'], kv: ['sglang:token_usage'] },
};

/** The load an engine's Prometheus text reports, or undefined when it is none of the engines above. */
export function parseMetrics(text: string, at: number): EngineReport | undefined {
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const value = Number(match[3]);
    if (!Number.isFinite(value)) continue;
    values.set(match[1], (values.get(match[1]) ?? 0) + value);
  }
  for (const engine of Object.keys(GAUGES) as EngineReport['engine'][]) {
    const gauges = GAUGES[engine];
    const pick = (names: string[]) => names.map((name) => values.get(name)).find((value) => value !== undefined);
    const running = pick(gauges.running);
    const waiting = pick(gauges.waiting);
    if (running === undefined && waiting === undefined) continue;
    const kv = pick(gauges.kv);
    return { engine, running, waiting, kvCacheUsage: kv === undefined ? undefined : Math.min(1, Math.max(0, kv)), at };
  }
  return undefined;
}
