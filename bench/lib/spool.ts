// A Spool server in a child process over a fresh temporary data directory
// (SQLite, log level silent), and the few API calls the benchmarks make:
// a streamed multipart upload, batch create, and a bounded status poll.
import { createReadStream, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import BetterSqlite3 from 'better-sqlite3';
import { Agent, request } from 'undici';
import type { ConfigInput } from '../../src/config.ts';
import type { RunnerStats } from '../../src/runner/runner.ts';
import type { SqlStat } from '../child-server.ts';
import { spawnChild, type ChildHandle } from './child.ts';
import type { BenchContext } from './report.ts';

export const BENCH_API_KEY = 'spool-bench-key-0123456789';

export interface SpoolChildOptions {
  label: string;
  /** Deep enough for the benches: worker, limits, upstreams and engine replace the defaults' sections. */
  config?: Pick<ConfigInput, 'worker' | 'limits' | 'upstreams' | 'engine' | 'databaseUrl'>;
  /** 'worker': the runner and sweeps only, as `spool worker` runs them (no HTTP; `url` is empty). Default 'serve'. */
  role?: 'serve' | 'worker';
  /** Share this (another child's) data directory, e.g. its blobs, instead of a fresh one; it is left in place on stop. */
  sharedDataDir?: string;
}

export interface SpoolChildStats {
  runner: RunnerStats | null;
  cpu: NodeJS.CpuUsage;
  memory: NodeJS.MemoryUsage;
}

export interface BatchTimes {
  status: string;
  created_at: number;
  in_progress_at: number | null;
  finalizing_at: number | null;
  completed_at: number | null;
  failed_at: number | null;
  request_total: number;
  request_completed: number;
  request_failed: number;
  /**
   * Earliest and latest result commit of the batch (ms): created_at of its segments, or, when it has no segment
   * rows left, finished_at of its chunks (the chunk's last segment commit, or the sweep that closed it).
   */
  first_finished_at: number | null;
  last_finished_at: number | null;
  /** Retries of the batch's lines: the third number of every model in its segments' `stats` ([ok, failed, retries]), summed. */
  retried: number;
}

export interface WireBatch {
  id: string;
  status: string;
  request_counts?: { total: number; completed: number; failed: number };
  errors?: unknown;
}

// One dispatcher for the harness's own API calls, separate from undici's global one.
const apiAgent = new Agent({ connections: 8, keepAliveTimeout: 10_000 });

// Data directories not yet removed, so a benchmark that failed midway leaves nothing behind either.
const liveDataDirs = new Set<string>();

/** Removes the data directory of every Spool child not stopped normally (the harness calls this on its way out). */
export function removeLeftoverDataDirs(keep: boolean): void {
  for (const dir of liveDataDirs) if (!keep) rmSync(dir, { recursive: true, force: true });
  liveDataDirs.clear();
}

export class SpoolChild {
  private constructor(
    readonly child: ChildHandle<{ url: string }>,
    readonly dataDir: string,
    private readonly ctx: BenchContext,
    private readonly ownsDataDir = true,
  ) {}

  static async start(ctx: BenchContext, options: SpoolChildOptions): Promise<SpoolChild> {
    const dataDir = options.sharedDataDir ?? mkdtempSync(join(tmpdir(), `spool-bench-${options.label}-`));
    if (!options.sharedDataDir) liveDataDirs.add(dataDir);
    const config: ConfigInput = {
      host: '127.0.0.1',
      port: 0,
      dataDir,
      adminKey: BENCH_API_KEY,
      log: { level: 'silent' },
      ...options.config,
    };
    // --spool-config overrides, one level deep per section (worker, limits...); upstream entries are merged by position.
    for (const [section, value] of Object.entries(ctx.spoolConfig)) {
      const current = (config as Record<string, unknown>)[section];
      if (section === 'upstreams' && Array.isArray(value) && Array.isArray(current)) {
        (config as Record<string, unknown>)[section] = current.map((upstream: object, i: number) => ({ ...upstream, ...(value[i] as object) }));
      } else if (value && typeof value === 'object' && !Array.isArray(value) && current && typeof current === 'object') {
        (config as Record<string, unknown>)[section] = { ...current, ...value };
      } else (config as Record<string, unknown>)[section] = value;
    }
    // One directory per child: Node names each thread's profile CPU.<date>.<time>.<pid>.<tid>.<seq>.cpuprofile (tid 0: the main thread).
    const nodeArgs = ctx.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${join(ctx.cpuProfDir, options.label)}`] : [];
    try {
      const child = await spawnChild<{ url: string }>(`spool(${options.label})`, ctx.bundledServer ?? 'bench/child-server.ts', {
        nodeArgs,
        env: {
          SPOOL_BENCH_CONFIG: JSON.stringify(config),
          SPOOL_LOG_LEVEL: 'silent',
          SPOOL_BENCH_SQL_PROFILE: ctx.sqlProfile ? '1' : '0',
          SPOOL_BENCH_ROLE: options.role ?? 'serve',
        },
      });
      return new SpoolChild(child, dataDir, ctx, !options.sharedDataDir);
    } catch (err) {
      if (!options.sharedDataDir) {
        rmSync(dataDir, { recursive: true, force: true });
        liveDataDirs.delete(dataDir);
      }
      throw err;
    }
  }

  get url(): string {
    return this.child.ready.url;
  }

  get pid(): number {
    return this.child.pid;
  }

  stats(): Promise<SpoolChildStats> {
    return this.child.call<SpoolChildStats>('stats');
  }

  /** SIGKILL, as a crash would. The data directory stays, for a restart on it; stop() still removes it. */
  async kill(): Promise<void> {
    const proc = this.child.proc;
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGKILL');
    await gone;
  }

  /** Stops the server, reads the batches' exact timings from its database, and removes the data directory. */
  async stop(batchIds: string[] = []): Promise<Map<string, BatchTimes>> {
    if (this.ctx.sqlProfile) await this.reportSql().catch((err: unknown) => this.ctx.log(`sql profile: ${String(err)}`));
    await this.child.stop();
    const times = new Map<string, BatchTimes>();
    try {
      if (batchIds.length > 0) {
        const db = new BetterSqlite3(join(this.dataDir, 'spool.db'), { readonly: true, fileMustExist: true });
        try {
          const batchRow = db.prepare(
            `SELECT status, created_at, in_progress_at, finalizing_at, completed_at, failed_at, request_total, request_completed, request_failed
             FROM batches WHERE id = ?`,
          );
          const segmentRows = db.prepare('SELECT created_at, stats FROM segments WHERE batch_id = ?');
          const chunkSpan = db.prepare('SELECT MIN(finished_at) AS first, MAX(finished_at) AS last FROM chunks WHERE batch_id = ?');
          for (const id of batchIds) {
            const row = batchRow.get(id) as Omit<BatchTimes, 'first_finished_at' | 'last_finished_at' | 'retried'> | undefined;
            if (!row) continue;
            let first: number | null = null;
            let last: number | null = null;
            let retried = 0;
            for (const segment of segmentRows.iterate(id) as Iterable<{ created_at: number; stats: string }>) {
              const at = Number(segment.created_at);
              first = first === null ? at : Math.min(first, at);
              last = last === null ? at : Math.max(last, at);
              retried += segmentRetries(segment.stats);
            }
            if (first === null) {
              const span = chunkSpan.get(id) as { first: number | null; last: number | null } | undefined;
              first = span?.first ?? null;
              last = span?.last ?? null;
            }
            times.set(id, { ...row, first_finished_at: first, last_finished_at: last, retried });
          }
        } finally {
          db.close();
        }
      }
    } finally {
      if (!this.ownsDataDir) {
        // Another child's directory: its owner removes it.
      } else if (this.ctx.keepDataDirs) this.ctx.log(`kept ${this.child.label}'s data directory ${this.dataDir}`);
      else rmSync(this.dataDir, { recursive: true, force: true });
      if (this.ownsDataDir) liveDataDirs.delete(this.dataDir);
    }
    return times;
  }

  /** SQLite statements run so far (prepares not counted), over every SQL text. */
  async sqlStatements(): Promise<number> {
    const stats = await this.child.call<SqlStat[]>('sqlStats');
    return stats.reduce((n, stat) => n + stat.runs, 0);
  }

  private async reportSql(): Promise<void> {
    const stats = await this.child.call<SqlStat[]>('sqlStats');
    const total = (stat: SqlStat) => stat.prepareMs + stat.runMs;
    stats.sort((a, b) => total(b) - total(a));
    const lines = stats
      .slice(0, 12)
      .map(
        (stat) =>
          `  ${total(stat).toFixed(0).padStart(6)} ms  prepare ${stat.prepareMs.toFixed(0).padStart(5)} ms x${stat.prepares}  run ${stat.runMs.toFixed(0).padStart(5)} ms x${stat.runs}  ${stat.sql.slice(0, 150)}`,
      );
    const sum = stats.reduce((n, stat) => n + total(stat), 0);
    this.ctx.log(`${this.child.label} SQLite time ${sum.toFixed(0)} ms in ${stats.reduce((n, s) => n + s.runs, 0)} statements; top:\n${lines.join('\n')}`);
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { authorization: `Bearer ${BENCH_API_KEY}`, ...extra };
  }

  private async json<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    const response = await request(`${this.url}${path}`, {
      method,
      dispatcher: apiAgent,
      headers: this.headers(body === undefined ? {} : { 'content-type': 'application/json' }),
      body: body === undefined ? undefined : JSON.stringify(body),
      headersTimeout: 60_000,
      bodyTimeout: 60_000,
    });
    const text = await response.body.text();
    if (response.statusCode >= 300) throw new Error(`${method} ${path}: HTTP ${response.statusCode}: ${text.slice(0, 500)}`);
    return JSON.parse(text) as T;
  }

  /**
   * OpenAI-style multipart upload, the file streamed from disk (never held
   * whole). Returns the file id and the wall time of the whole request.
   */
  async upload(path: string, purpose = 'batch'): Promise<{ fileId: string; bytes: number; ms: number }> {
    const bytes = statSync(path).size;
    const boundary = `----spool-bench-${Date.now().toString(16)}`;
    const head = Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n${purpose}\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="input.jsonl"\r\nContent-Type: application/jsonl\r\n\r\n`,
    );
    const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
    async function* body(): AsyncGenerator<Buffer> {
      yield head;
      for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) yield chunk as Buffer;
      yield tail;
    }
    const started = performance.now();
    const response = await request(`${this.url}/openai/v1/files`, {
      method: 'POST',
      dispatcher: apiAgent,
      headers: this.headers({
        'content-type': `multipart/form-data; boundary=${boundary}`,
        'content-length': String(head.length + bytes + tail.length),
      }),
      body: Readable.from(body()),
      headersTimeout: 120_000,
      bodyTimeout: 120_000,
    });
    const text = await response.body.text();
    const ms = performance.now() - started;
    if (response.statusCode !== 200) throw new Error(`upload: HTTP ${response.statusCode}: ${text.slice(0, 500)}`);
    const file = JSON.parse(text) as { id: string; bytes: number };
    if (file.bytes !== bytes) throw new Error(`upload: server counted ${file.bytes} bytes, the file has ${bytes}`);
    return { fileId: file.id, bytes, ms };
  }

  createBatch(fileId: string, endpoint = '/v1/chat/completions'): Promise<WireBatch> {
    return this.json<WireBatch>('POST', '/openai/v1/batches', { input_file_id: fileId, endpoint, completion_window: '24h' });
  }

  getBatch(id: string): Promise<WireBatch> {
    return this.json<WireBatch>('GET', `/openai/v1/batches/${id}`);
  }

  /** Polls until the batch reaches one of `statuses` (throws on any other terminal status, or after timeoutMs). */
  async waitFor(id: string, statuses: string[], timeoutMs: number, pollMs = 50): Promise<WireBatch> {
    const deadline = Date.now() + timeoutMs;
    const terminal = ['failed', 'completed', 'expired', 'cancelled'];
    for (;;) {
      const batch = await this.getBatch(id);
      if (statuses.includes(batch.status)) return batch;
      if (terminal.includes(batch.status)) throw new Error(`batch ${id} ended ${batch.status}: ${JSON.stringify(batch.errors ?? null).slice(0, 500)}`);
      if (Date.now() > deadline) {
        throw new Error(`batch ${id} still ${batch.status} after ${timeoutMs} ms (counts ${JSON.stringify(batch.request_counts ?? null)})`);
      }
      await new Promise((resolve) => setTimeout(resolve, pollMs));
    }
  }
}

/** Retries one segment recorded: the third number of each model's [ok, failed, retries] in its `stats` JSON. */
function segmentRetries(stats: string): number {
  try {
    const models = (JSON.parse(stats) as { models?: Record<string, unknown> }).models;
    let n = 0;
    for (const counts of Object.values(models ?? {})) if (Array.isArray(counts)) n += Number(counts[2] ?? 0) || 0;
    return n;
  } catch {
    return 0;
  }
}

export async function closeApiAgent(): Promise<void> {
  await apiAgent.close();
}
