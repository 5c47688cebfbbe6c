// The benchmark harness: `npm run bench [-- --only upload,validate --quick]`.
// Runs each selected benchmark against a fresh Spool child process over
// loopback, prints one markdown table at the end and writes it to
// bench/.out/results.md. Every benchmark is bounded in requests and in time,
// and every process it starts is stopped (or killed) before it returns.
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchCapacity, overloadScenario } from './capacity.ts';
import { benchEngine } from './engine.ts';
import { benchKnee } from './knee.ts';
import { killAllChildren, REPO_ROOT } from './lib/child.ts';
import { ForeignLoadMeter } from './lib/proc.ts';
import { createContext, errorRow, renderTable, sleep, withTimeout, type BenchContext, type Row } from './lib/report.ts';
import { closeApiAgent, removeLeftoverDataDirs } from './lib/spool.ts';
import { summarizeProfile } from './profile-summary.ts';
import { benchPools } from './pools.ts';
import { benchRecovery } from './recovery.ts';
import { benchRss } from './rss.ts';
import { benchScale } from './scale.ts';
import { benchUpload } from './upload.ts';
import { benchValidate } from './validate.ts';
import { benchZeroLatency } from './zero-latency.ts';

const BENCHES: Record<string, (ctx: BenchContext) => Promise<Row[]>> = {
  upload: benchUpload,
  validate: benchValidate,
  capacity: (ctx) => benchCapacity(ctx),
  'capacity-429': (ctx) => benchCapacity(ctx, overloadScenario(ctx.quick)),
  'zero-latency': benchZeroLatency,
  rss: benchRss,
  scale: benchScale,
  engine: benchEngine,
  knee: benchKnee,
  recovery: benchRecovery,
  pools: benchPools,
};

// Whatever happens inside one benchmark, it is given up after this long.
const BENCH_TIMEOUT_MS = 10 * 60_000;
// Before each benchmark, wait at most this long for the rest of the machine to use under QUIET_SHARE of its CPU.
const QUIET_WAIT_MS = 60_000;
const QUIET_SHARE = 0.15;

const USAGE = `usage: npm run bench [-- options]
  --only a,b,...   run only these (${Object.keys(BENCHES).join(', ')})
  --quick          smaller inputs (about a tenth), for a fast check
  --cpu-prof       write a V8 CPU profile of every Spool child to bench/.out/prof and summarise it
  --sql-profile    time every SQLite statement in the Spool children and print the heaviest
  --spool-config JSON  merged over every Spool child's config, e.g. '{"worker":{"claimBatchSize":256}}' (experiments)
  --tsx            run the Spool children through the tsx loader instead of the esbuild bundle that npm install builds
  --no-wait-quiet  start each benchmark at once instead of first waiting (up to ${QUIET_WAIT_MS / 1000} s) for other processes to leave the CPU alone
  --keep-data      keep each Spool child's data directory (paths are printed)
  --help`;

function parseArgs(argv: string[]) {
  const options = { only: Object.keys(BENCHES), quick: false, cpuProf: false, sqlProfile: false, spoolConfig: {} as Record<string, unknown>, keepData: false, bundled: true, waitQuiet: true };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const inline = arg.includes('=') ? arg.slice(arg.indexOf('=') + 1) : argv[++i];
      if (inline === undefined) throw new Error(`${arg} needs a value`);
      return inline;
    };
    if (arg === '--quick') options.quick = true;
    else if (arg === '--cpu-prof') options.cpuProf = true;
    else if (arg === '--sql-profile') options.sqlProfile = true;
    else if (arg === '--spool-config' || arg.startsWith('--spool-config=')) options.spoolConfig = JSON.parse(value()) as Record<string, unknown>;
    else if (arg === '--keep-data') options.keepData = true;
    else if (arg === '--bundled') options.bundled = true;
    else if (arg === '--tsx') options.bundled = false;
    else if (arg === '--no-wait-quiet') options.waitQuiet = false;
    else if (arg === '--only' || arg.startsWith('--only=')) {
      options.only = value()
        .split(',')
        .map((name) => name.trim())
        .filter(Boolean);
      const unknown = options.only.filter((name) => !(name in BENCHES));
      if (unknown.length > 0) throw new Error(`unknown benchmark(s): ${unknown.join(', ')}`);
    } else if (arg === '--help' || arg === '-h') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else throw new Error(`unknown option ${arg}\n${USAGE}`);
  }
  return options;
}

async function main(): Promise<number> {
  const options = parseArgs(process.argv.slice(2));
  const outDir = join(REPO_ROOT, 'bench', '.out');
  mkdirSync(outDir, { recursive: true });
  const cpuProfDir = options.cpuProf ? join(outDir, 'prof') : undefined;
  if (cpuProfDir) {
    rmSync(cpuProfDir, { recursive: true, force: true });
    mkdirSync(cpuProfDir, { recursive: true });
  }
  const bundledServer = options.bundled ? await bundleChildServer(join(outDir, 'bundle')) : undefined;
  const tmpDir = mkdtempSync(join(tmpdir(), 'spool-bench-inputs-'));
  const ctx = createContext({
    quick: options.quick,
    tmpDir,
    outDir,
    cpuProfDir,
    sqlProfile: options.sqlProfile,
    spoolConfig: options.spoolConfig,
    keepDataDirs: options.keepData,
    bundledServer,
  });
  const rows: Row[] = [];
  const busy: string[] = [];
  const started = Date.now();
  try {
    for (const name of options.only) {
      ctx.log(`--- ${name}${options.quick ? ' (quick)' : ''}`);
      if (options.waitQuiet) await waitForQuiet(ctx);
      const benchStarted = Date.now();
      const load = new ForeignLoadMeter();
      try {
        rows.push(...(await withTimeout(BENCHES[name](ctx), BENCH_TIMEOUT_MS, name)));
      } catch (err) {
        ctx.log(`${name} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        rows.push(errorRow(name, err));
        killAllChildren();
      }
      const seconds = (Date.now() - benchStarted) / 1000;
      const foreign = load.stop();
      const share = foreign === undefined ? undefined : foreign / (seconds * cpus().length);
      ctx.log(`${name} took ${seconds.toFixed(1)} s${share === undefined ? '' : `; other processes on the machine used ${(100 * share).toFixed(0)}% of its CPU meanwhile`}`);
      if (share !== undefined && share > 0.1) busy.push(`${name} ${(100 * share).toFixed(0)}%`);
    }
  } finally {
    killAllChildren();
    removeLeftoverDataDirs(options.keepData);
    await closeApiAgent();
    rmSync(tmpDir, { recursive: true, force: true });
  }

  const table = renderTable(rows);
  const failed = rows.filter((row) => row.pass === false).length;
  const machine = `${cpus().length} x ${cpus()[0]?.model.trim() ?? 'CPU'}, Node ${process.version}, ${process.platform}`;
  const notes = [
    `Spool ${options.quick ? '--quick ' : ''}benchmarks, ${new Date().toISOString()}, ${machine}; ${((Date.now() - started) / 1000).toFixed(0)} s.` +
      ` Spool ran ${options.bundled ? 'from an esbuild bundle on plain node, as bin/spool.js runs it after npm install' : 'through the tsx loader (--tsx)'}.`,
    'MB = 10^6 bytes (throughput), MiB = 2^20 bytes (memory). RSS is the Spool child process only (VmHWM + 20 ms samples).',
  ];
  if (busy.length > 0) notes.push(`Other processes were busy on this machine during: ${busy.join(', ')} of its CPU; those numbers are less trustworthy.`);
  process.stdout.write(`\n${table}\n\n${notes.join('\n')}\n`);
  writeFileSync(join(outDir, 'results.md'), `# Spool benchmarks\n\n${notes.join('\n\n')}\n\n${table}\n`);
  ctx.log(`wrote ${join(outDir, 'results.md')}`);

  if (cpuProfDir) {
    // Main threads only (tid 0); the others are tsx's module-loader thread, idle once started.
    for (const file of readdirSync(cpuProfDir, { recursive: true, encoding: 'utf8' }).filter((name) => /\.0\.\d+\.cpuprofile$/.test(name))) {
      const summary = summarizeProfile(join(cpuProfDir, file));
      writeFileSync(join(cpuProfDir, file.replace(/\.cpuprofile$/, '.txt')), `${summary}\n`);
      process.stderr.write(`\n${summary}\n`);
    }
  }
  return failed === 0 ? 0 : 1;
}

/** Waits (bounded) until other processes use under QUIET_SHARE of the CPU over a one-second window. */
async function waitForQuiet(ctx: BenchContext): Promise<void> {
  const deadline = Date.now() + QUIET_WAIT_MS;
  let waited = false;
  for (;;) {
    const meter = new ForeignLoadMeter(100);
    await sleep(1000);
    const foreign = meter.stop();
    if (foreign === undefined) return;
    const share = foreign / cpus().length;
    if (share < QUIET_SHARE) {
      if (waited) ctx.log('the machine is quiet now');
      return;
    }
    if (Date.now() > deadline) {
      ctx.log(`other processes still use ${(100 * share).toFixed(0)}% of the CPU; going ahead anyway`);
      return;
    }
    if (!waited) ctx.log(`other processes use ${(100 * share).toFixed(0)}% of the CPU; waiting up to ${QUIET_WAIT_MS / 1000} s for them`);
    waited = true;
  }
}

/** Bundles bench/child-server.ts (and the src/ it imports) exactly as dist/ is built, so the child runs without the tsx loader. */
async function bundleChildServer(dir: string): Promise<string> {
  const { bundle } = await import('../scripts/bundle.mjs');
  rmSync(dir, { recursive: true, force: true });
  // engine-direct.ts, the engine bench's reference process, is bundled alongside so both sides run on plain node.
  await bundle({ entryPoints: [join(REPO_ROOT, 'bench', 'child-server.ts'), join(REPO_ROOT, 'bench', 'engine-direct.ts')], outdir: dir });
  return join(dir, 'child-server.mjs');
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    killAllChildren();
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  },
);
