// The simulated upstream (../sim-upstream.ts) as a child process.
import type { SimUpstreamOptions, SimUpstreamStats } from '../sim-upstream.ts';
import { spawnChild, type ChildHandle } from './child.ts';

export interface SimChild {
  pid: number;
  port: number;
  /** OpenAI-style base URL, for an upstream config. */
  baseUrl: string;
  stats(): Promise<SimUpstreamStats>;
  reset(): Promise<void>;
  stop(): Promise<void>;
}

export async function startSimChild(label: string, options: Partial<SimUpstreamOptions>): Promise<SimChild> {
  const child: ChildHandle<{ port: number }> = await spawnChild(`sim-upstream(${label})`, 'bench/sim-upstream.ts', {
    env: { SIM_UPSTREAM_OPTIONS: JSON.stringify(options) },
  });
  const port = child.ready.port;
  return {
    pid: child.pid,
    port,
    baseUrl: `http://127.0.0.1:${port}/v1`,
    stats: () => child.call<SimUpstreamStats>('stats'),
    reset: () => child.call<void>('reset'),
    stop: async () => {
      await child.stop();
    },
  };
}

/**
 * Steady-state rate seen by the upstream: completions between the moments
 * 10% and 90% of them had been served, over that time (leaves out ramp-up
 * and tail). Requests per second.
 */
export function steadyStateRate(stats: SimUpstreamStats): number {
  const total = stats.completions.reduce((a, b) => a + b, 0);
  if (total < 10) return NaN;
  let seen = 0;
  let t10 = -1;
  let t90 = -1;
  for (let i = 0; i < stats.completions.length; i++) {
    seen += stats.completions[i];
    if (t10 < 0 && seen >= total * 0.1) t10 = i;
    if (t90 < 0 && seen >= total * 0.9) {
      t90 = i;
      break;
    }
  }
  const spanMs = (t90 - t10) * stats.bucketMs;
  return spanMs > 0 ? (0.8 * total) / (spanMs / 1000) : NaN;
}

/**
 * How long after the first request the upstream first served at >= `share`
 * of `ceiling` over a 100 ms window (ms), or NaN if it never did.
 */
export function timeToCeiling(stats: SimUpstreamStats, ceiling: number, share = 0.95): number {
  const window = Math.max(1, Math.round(100 / stats.bucketMs));
  const needed = ceiling * share * ((window * stats.bucketMs) / 1000);
  let inWindow = 0;
  for (let i = 0; i < stats.completions.length; i++) {
    inWindow += stats.completions[i];
    if (i >= window) inWindow -= stats.completions[i - window];
    if (i >= window - 1 && inWindow >= needed) return (i + 1) * stats.bucketMs;
  }
  return NaN;
}
