// Runs one Spool server (API + worker, as `spool serve` does) for the bench
// harness, in its own process so its memory and CPU can be measured apart
// from the harness's. The config (already in config-file shape) comes in
// SPOOL_BENCH_CONFIG; the parent talks to it over IPC (see lib/child.ts).
// SPOOL_BENCH_ROLE=worker runs a worker only, as `spool worker` does.
// Every SQLite statement is counted and timed (prepare and execution, per SQL
// text; two clock reads a statement, nothing next to a statement's own cost)
// and the totals are answered to 'sqlStats': the zero-latency bench reports
// statements per request from them, and with --sql-profile the harness logs
// the heaviest.
import BetterSqlite3 from 'better-sqlite3';
import { startSpool, startWorker } from '../src/app.ts';
import { parseConfig } from '../src/config.ts';
import { serveParent } from './lib/child.ts';

export interface SqlStat {
  sql: string;
  prepares: number;
  prepareMs: number;
  runs: number;
  runMs: number;
}

const sqlStats = new Map<string, SqlStat>();

function profileSql(): void {
  type Prepare = (this: BetterSqlite3.Database, source: string) => BetterSqlite3.Statement;
  const proto = BetterSqlite3.prototype as unknown as { prepare: Prepare };
  const prepare = proto.prepare;
  proto.prepare = function (this: BetterSqlite3.Database, source: string) {
    // Bound values differ per call, the text does not; IN lists are folded so one shape is one entry.
    const key = source.replace(/\s+/g, ' ').replace(/\?(, \?)+/g, '?, …');
    let stat = sqlStats.get(key);
    if (!stat) sqlStats.set(key, (stat = { sql: key, prepares: 0, prepareMs: 0, runs: 0, runMs: 0 }));
    const started = performance.now();
    const statement = prepare.call(this, source);
    stat.prepares += 1;
    stat.prepareMs += performance.now() - started;
    const record = stat;
    const methods = statement as unknown as Record<'run' | 'all' | 'get', (...args: unknown[]) => unknown>;
    for (const name of ['run', 'all', 'get'] as const) {
      const original = methods[name];
      methods[name] = function (this: unknown, ...args: unknown[]) {
        const at = performance.now();
        try {
          return original.apply(this, args);
        } finally {
          record.runs += 1;
          record.runMs += performance.now() - at;
        }
      };
    }
    return statement;
  };
}

profileSql();

const config = parseConfig(JSON.parse(process.env.SPOOL_BENCH_CONFIG ?? '{}'));
if (process.env.SPOOL_BENCH_ROLE === 'worker') {
  // `spool worker`: the runner and sweeps, no HTTP (bench --only scale).
  const quiet = () => undefined;
  const worker = await startWorker(config, { info: quiet, warn: quiet, error: quiet });
  serveParent(
    { url: '' },
    { stats: () => ({ runner: worker.runner.stats(), cpu: process.cpuUsage(), memory: process.memoryUsage() }), sqlStats: () => [...sqlStats.values()] },
    () => worker.close(),
  );
} else {
  const app = await startSpool(config);
  serveParent(
    { url: app.url },
    {
      stats: () => ({ runner: app.runner?.stats() ?? null, cpu: process.cpuUsage(), memory: process.memoryUsage() }),
      sqlStats: () => [...sqlStats.values()],
    },
    () => app.close(),
  );
}
