// Spool started the way users and pods start it: with the whole environment of
// the shell that runs the tests, unstripped, plus what Kubernetes puts in every
// pod of a namespace with a Service named "spool" (service links), an unrelated
// SPOOL_* switch, a numeric admin key and the CLI's own SPOOL_API_KEY. The other
// child-process tests give their children a clean environment; this one is the
// check that a polluted one neither stops start-up nor changes who is admin.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { logFormat } from '../../src/config.ts';
import { KUBERNETES_SERVICE_LINKS } from '../helpers/kubernetes-env.ts';
import { startS3rver, type TestS3 } from '../helpers/s3rver.ts';
import {
  api,
  cleanupAll,
  createPostgresDatabase,
  makeTempDir,
  REPO_ROOT,
  SKIP_POSTGRES,
  spawnSpool,
  toJsonl,
  chatLines,
} from '../helpers/runner-harness.ts';

after(cleanupAll);

const NUMERIC_ADMIN_KEY = '12345678';
const CLI_KEY = 'a-key-exported-for-the-cli-only';

describe('spool serve in a polluted environment', () => {
  it('starts with Kubernetes service links and stray SPOOL_* variables, warning once about each kind', async () => {
    const spool = await spawnSpool(
      ['serve'],
      {
        dataDir: makeTempDir(),
        // The port comes from the config file: SPOOL_PORT=tcp://... in the environment must not override it.
        config: { port: 0, host: '127.0.0.1' },
        environment: 'inherit',
        env: {
          ...KUBERNETES_SERVICE_LINKS,
          SPOOL_TEST_SKIP_POSTGRES: process.env.SPOOL_TEST_SKIP_POSTGRES ?? '0',
          SPOOL_ADMIN_KEY: NUMERIC_ADMIN_KEY,
          SPOOL_API_KEY: CLI_KEY,
          SPOOL_LOG_LEVEL: 'silent',
        },
      },
      /Spool listening on (http:\/\/[^\s]+)/,
    );
    const url = spool.match[1];
    const output = spool.output();
    assert.match(output, /spool: warning: ignoring [^\n]*SPOOL_PORT_8080_TCP_ADDR[^\n]*Kubernetes service links/);
    assert.match(output, /spool: warning: ignoring [^\n]*SPOOL_TEST_SKIP_POSTGRES[^\n]*not a Spool setting/);

    const admin = await api(`${url}/v1/admin/status`, NUMERIC_ADMIN_KEY);
    assert.equal(admin.status, 200, `the numeric SPOOL_ADMIN_KEY is the admin key: ${admin.text}`);
    const cliKey = await api(`${url}/v1/batches`, CLI_KEY);
    assert.equal(cliKey.status, 401, 'the CLI key exported in the same shell is not accepted by the server');
    await spool.kill();
  });

  it('says once why SPOOL_API_KEY no longer works when it is the only key given', async () => {
    const spool = await spawnSpool(
      ['serve'],
      {
        dataDir: makeTempDir(),
        config: { port: 0, host: '127.0.0.1' },
        environment: 'inherit',
        env: { SPOOL_ADMIN_KEY: '', SPOOL_API_KEY: CLI_KEY, SPOOL_LOG_LEVEL: 'silent' },
      },
      /Spool listening on (http:\/\/[^\s]+)/,
    );
    assert.match(spool.output(), /SPOOL_API_KEY is the key the spool CLI sends[^\n]*set SPOOL_ADMIN_KEY/);
    await spool.kill();
  });
});

describe('spool run (embedded) in a shell with DATABASE_URL set', { skip: SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1' : false }, () => {
  it('keeps its throwaway database to itself: the ambient PostgreSQL database is never migrated', async () => {
    const databaseUrl = await createPostgresDatabase();
    const dir = makeTempDir();
    const input = join(dir, 'echo.jsonl');
    writeFileSync(input, toJsonl(chatLines(3, 'echo')));
    const child = spawn(process.execPath, ['bin/spool.js', 'run', input, '--json', '--quiet'], {
      cwd: REPO_ROOT,
      env: { ...process.env, DATABASE_URL: databaseUrl, SPOOL_DATABASE_URL: databaseUrl, SPOOL_BLOBS__KIND: 's3' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
    assert.equal(code, 0, `spool run: ${stderr}`);
    assert.equal(JSON.parse(stdout).status, 'completed');

    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    try {
      const tables = await client.query(`select table_name from information_schema.tables where table_schema = 'public'`);
      assert.deepEqual(tables.rows, [], 'no table was created in the ambient database');
    } finally {
      await client.end();
    }
  });
});

describe('the first start of a scaled-out deployment (PostgreSQL and S3, no admin key configured)', { skip: SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1' : false }, () => {
  let s3: TestS3;
  before(async () => {
    s3 = await startS3rver();
  });
  after(async () => {
    await s3?.close();
  });

  async function firstStart(dataDir: string) {
    const bucket = await s3.createBucket();
    const { endpoint, region, accessKeyId, secretAccessKey, forcePathStyle } = s3.storeOptions(bucket);
    const spool = await spawnSpool(
      ['serve'],
      {
        dataDir,
        databaseUrl: await createPostgresDatabase(),
        config: { port: 0, host: '127.0.0.1', blobs: { kind: 's3', s3: { endpoint, region, bucket, accessKeyId, secretAccessKey, forcePathStyle } } },
        environment: 'inherit',
        env: { SPOOL_ADMIN_KEY: '', SPOOL_API_KEY: '', SPOOL_LOG_LEVEL: 'silent' },
      },
      /Spool listening on (http:\/\/[^\s]+)/,
    );
    const key = /\n {2}(spool_[A-Za-z0-9_-]+)\n/.exec(spool.output())?.[1];
    assert.ok(key, `the new key is printed: ${spool.output()}`);
    const status = await api(`${spool.match[1]}/v1/admin/status`, key);
    assert.equal(status.status, 200, 'the printed key is an admin key');
    return { spool, key };
  }

  it('shows the key it made and saves a copy in a data dir it creates', async () => {
    const dataDir = join(makeTempDir(), 'not', 'made', 'yet');
    const { spool, key } = await firstStart(dataDir);
    const saved = join(dataDir, 'initial-api-key');
    assert.equal(readFileSync(saved, 'utf8'), `${key}\n`);
    assert.equal(statSync(saved).mode & 0o777, 0o600);
    assert.match(spool.output(), /A copy is in .*initial-api-key \(mode 600\)/);
    await spool.kill();
  });

  it('still shows the key, and says why, when no copy can be saved', async () => {
    const file = join(makeTempDir(), 'a-file');
    writeFileSync(file, 'not a directory');
    const { spool } = await firstStart(join(file, 'data'));
    assert.match(spool.output(), /No copy could be saved \(.*initial-api-key: .*\): store it now/);
    await spool.kill();
  });
});

describe('logs for people and for collectors', () => {
  it('the format follows the terminal unless log.format (or the older log.pretty) says which', () => {
    const log = (format: 'auto' | 'pretty' | 'json', pretty?: boolean) => ({ level: 'info' as const, format, pretty });
    assert.equal(logFormat(log('auto'), true), 'pretty');
    assert.equal(logFormat(log('auto'), false), 'json');
    assert.equal(logFormat(log('json'), true), 'json');
    assert.equal(logFormat(log('pretty'), false), 'pretty');
    assert.equal(logFormat(log('auto', true), false), 'pretty');
    assert.equal(logFormat(log('auto', false), true), 'json');
  });

  // `script` runs the command on a pseudo-terminal, as a user's shell would (util-linux; present on Debian).
  const script = ['/usr/bin/script', '/bin/script'].find((path) => existsSync(path));
  it('spool serve on a terminal writes readable lines; through a pipe, JSON lines', { skip: script ? false : 'no script(1) to make a terminal' }, async () => {
    const run = async (onTerminal: boolean) => {
      const dataDir = makeTempDir('spool-logs-');
      const command = `${process.execPath} bin/spool.js serve --port 0 --data-dir ${dataDir}`;
      const env = { ...process.env, SPOOL_ADMIN_KEY: 'log-format-key-0123', SPOOL_LOG_LEVEL: 'info' };
      const child = onTerminal
        ? spawn(script!, ['-qec', command, '/dev/null'], { cwd: REPO_ROOT, env })
        : spawn(process.execPath, ['bin/spool.js', 'serve', '--port', '0', '--data-dir', dataDir], { cwd: REPO_ROOT, env });
      let text = '';
      child.stdout!.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
      child.stderr!.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
      const deadline = Date.now() + 30_000;
      while (!/Server listening at/.test(text) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
      return text.split(/\r?\n/).find((line) => line.includes('Server listening at')) ?? `(no log line in ${JSON.stringify(text.slice(0, 500))})`;
    };
    const onTerminal = await run(true);
    assert.match(onTerminal, /^\[\d\d:\d\d:\d\d\.\d{3}\] .*INFO.*: .*Server listening at/, 'time, level and message, for people');
    const piped = await run(false);
    assert.equal(JSON.parse(piped).msg.startsWith('Server listening at'), true, 'one JSON object per line');
  });
});
