// Process measurements from /proc: resident memory (current and peak) and CPU
// time of another process, so a benchmark can watch the Spool child without
// its own memory or CPU counting. Linux only; elsewhere the readers return
// undefined and the sampler reports nothing.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';

const CLOCK_TICKS_PER_SECOND = 100; // USER_HZ on every Linux this runs on

export interface MemoryStatus {
  /** VmRSS, bytes. */
  rss: number;
  /** VmHWM (peak RSS since start or the last resetPeak), bytes. */
  hwm: number;
}

export function readMemory(pid: number): MemoryStatus | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN) * 1024;
  const rss = kb('VmRSS');
  const hwm = kb('VmHWM');
  return Number.isFinite(rss) ? { rss, hwm: Number.isFinite(hwm) ? hwm : rss } : undefined;
}

/** Resets VmHWM to the current RSS (writes "5" to clear_refs); false where the kernel or permissions refuse. */
export function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** User + system CPU seconds the process has used so far. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may hold spaces.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return (utime + stime) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

/**
 * Samples a process's RSS every `intervalMs` and, on stop, combines the
 * highest sample with the kernel's own high-water mark (VmHWM, reset at
 * start when the kernel allows), which also catches spikes between samples.
 */
export class RssSampler {
  private timer: NodeJS.Timeout | undefined;
  private maxSampled = 0;
  private samples = 0;
  private hwmReset = false;
  private cpuAtStart: number | undefined;
  private startedAt = 0;

  constructor(
    private readonly pid: number,
    private readonly intervalMs = 20,
  ) {}

  start(): this {
    this.hwmReset = resetPeak(this.pid);
    this.maxSampled = 0;
    this.samples = 0;
    this.cpuAtStart = cpuSeconds(this.pid);
    this.startedAt = performance.now();
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    return this;
  }

  private sample(): void {
    const memory = readMemory(this.pid);
    if (!memory) return;
    this.samples += 1;
    if (memory.rss > this.maxSampled) this.maxSampled = memory.rss;
  }

  /** Peak RSS in bytes since start(), and the CPU the process used meanwhile (seconds, and as a share of one core). */
  stop(): { peakBytes: number; samples: number; usedHwm: boolean; cpuSeconds: number | undefined; cpuCores: number | undefined } {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.sample();
    const memory = readMemory(this.pid);
    const usedHwm = this.hwmReset && memory !== undefined;
    const peakBytes = Math.max(this.maxSampled, usedHwm ? memory.hwm : 0);
    const cpuNow = cpuSeconds(this.pid);
    const cpu = cpuNow !== undefined && this.cpuAtStart !== undefined ? cpuNow - this.cpuAtStart : undefined;
    const wallS = (performance.now() - this.startedAt) / 1000;
    return { peakBytes, samples: this.samples, usedHwm, cpuSeconds: cpu, cpuCores: cpu !== undefined && wallS > 0 ? cpu / wallS : undefined };
  }
}

/** CPU seconds the whole machine has spent busy (all cores, /proc/stat: everything but idle and iowait). */
export function machineBusySeconds(): number | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0];
    const [, ...fields] = line.trim().split(/\s+/);
    const ticks = fields.map(Number);
    const total = ticks.slice(0, 8).reduce((a, b) => a + b, 0); // user nice system idle iowait irq softirq steal
    return (total - ticks[3] - ticks[4]) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

/**
 * How busy the rest of the machine was while a benchmark ran: the machine's
 * busy CPU time minus that of this process and all its descendants (Spool,
 * the simulated upstream, tsx's esbuild service...), which are sampled every
 * `intervalMs` because they may exit before the end. Kernel threads (disk
 * flushing for fsync) count as "other".
 */
export class ForeignLoadMeter {
  private readonly startMachine = machineBusySeconds();
  private readonly seen = new Map<number, { first: number; last: number }>();
  private readonly timer: NodeJS.Timeout;

  constructor(intervalMs = 250) {
    this.sample(true);
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref();
  }

  private sample(initial = false): void {
    const parents = new Map<number, number>();
    const cpu = new Map<number, number>();
    let pids: string[];
    try {
      pids = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
    } catch {
      return;
    }
    for (const name of pids) {
      try {
        const text = readFileSync(`/proc/${name}/stat`, 'utf8');
        const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
        parents.set(Number(name), Number(fields[1]));
        cpu.set(Number(name), (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND);
      } catch {
        // exited meanwhile
      }
    }
    const ours = (pid: number): boolean => {
      for (let at = pid, hops = 0; at > 1 && hops < 32; at = parents.get(at) ?? 0, hops++) if (at === process.pid) return true;
      return false;
    };
    for (const [pid, seconds] of cpu) {
      if (!ours(pid)) continue;
      const entry = this.seen.get(pid);
      // Processes already there at the start count from then; any that appear later started after the meter did.
      if (entry) entry.last = seconds;
      else this.seen.set(pid, { first: initial ? seconds : 0, last: seconds });
    }
  }

  /** CPU seconds used by everything else since construction, or undefined off Linux. */
  stop(): number | undefined {
    this.sample();
    clearInterval(this.timer);
    const machine = machineBusySeconds();
    if (this.startMachine === undefined || machine === undefined) return undefined;
    let ours = 0;
    for (const { first, last } of this.seen.values()) ours += last - first;
    return Math.max(0, machine - this.startMachine - ours);
  }
}
