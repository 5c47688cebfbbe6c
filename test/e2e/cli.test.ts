// The client commands (`spool run`, `spool files …`, `spool batches …`) run
// as child processes (`node bin/spool.js`, TypeScript sources) against a real
// Spool server, or an embedded one for `spool run` without --server. Checks
// what scripts rely on: JSON on stdout that parses, one-line errors on
// stderr, and the documented exit codes.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../helpers/ports.ts';
import { after, before, describe, it } from 'node:test';
import {
  callJson,
  chatJsonl,
  chatLine,
  jsonl,
  makeTempDir,
  parseJsonl,
  pollUntil,
  removeAllTempDirs,
  startTestSpool,
  writeFixture,
  type Json,
  type TestSpool,
} from '../helpers/spool.ts';

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI_DEADLINE_MS = 60_000;

// The documented exit codes (docs/cli.md, "Exit codes").
const EXIT = { ok: 0, usage: 1, batchNotCompleted: 2, unreachable: 3, auth: 4, notFound: 5, timedOut: 124, interrupted: 130 };

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface CliProcess {
  child: ChildProcess;
  stderr(): string;
  done: Promise<CliResult>;
}

/** Starts `node bin/spool.js ...args` from the TypeScript sources, with no SPOOL_* setting of the test process leaking in. */
function startCli(args: string[], env: Record<string, string> = {}): CliProcess {
  const childEnv: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) if (!name.startsWith('SPOOL_') && name !== 'DATABASE_URL') childEnv[name] = value;
  Object.assign(childEnv, { SPOOL_FROM_SOURCE: '1' }, env);
  const child = spawn(process.execPath, ['bin/spool.js', ...args], { cwd: REPO_ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const done = new Promise<CliResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`spool ${args.join(' ')} did not exit within ${CLI_DEADLINE_MS} ms; stderr: ${stderr}`));
    }, CLI_DEADLINE_MS);
    child.once('exit', (code) => {
      clearTimeout(timer);
      // 'exit' can come before the pipes are drained; 'close' follows once they are.
      child.once('close', () => resolve({ code, stdout, stderr }));
      if (child.stdout!.readableEnded && child.stderr!.readableEnded) resolve({ code, stdout, stderr });
    });
  });
  return { child, stderr: () => stderr, done };
}

function cli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return startCli(args, env).done;
}

function expectExit(result: CliResult, code: number, what: string): void {
  assert.equal(result.code, code, `${what}: exit ${result.code}, expected ${code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
}

/** The one-line error the CLI promises: "spool: <message>" and nothing after it. */
function assertOneLineError(result: CliResult, pattern: RegExp): void {
  const lines = result.stderr.trimEnd().split('\n');
  const last = lines.at(-1) ?? '';
  assert.match(last, /^spool: /, `stderr ends with a "spool: " line: ${result.stderr}`);
  assert.match(last, pattern);
}

function parseJson(result: CliResult): any {
  try {
    return JSON.parse(result.stdout);
  } catch {
    assert.fail(`stdout is not JSON: ${result.stdout}\nstderr: ${result.stderr}`);
  }
}

function echoJsonl(count: number, prefix = 'echo'): string {
  return chatJsonl(count, { model: 'echo', prefix });
}

let spool: TestSpool;
let dir: string;
/** --server and --api-key for the test server. */
let remote: string[];

before(async () => {
  spool = await startTestSpool();
  dir = makeTempDir('spool-cli-');
  remote = ['--server', spool.url, '--api-key', spool.apiKey];
});

after(async () => {
  await spool?.stop();
  removeAllTempDirs();
});

describe('spool run (embedded)', () => {
  it('turns a JSONL file into output and error files with no server around', async () => {
    const input = writeFixture(dir, 'embedded.jsonl', echoJsonl(5));
    const result = await cli(['run', input, '--json']);
    expectExit(result, EXIT.ok, 'run embedded');
    const batch = parseJson(result);
    assert.equal(batch.status, 'completed');
    assert.deepEqual(batch.request_counts, { total: 5, completed: 5, failed: 0 });
    const output = parseJsonl(readFileSync(join(dir, 'embedded.output.jsonl'), 'utf8'));
    assert.deepEqual(output.map((line) => line.custom_id).sort(), ['echo-1', 'echo-2', 'echo-3', 'echo-4', 'echo-5']);
    for (const line of output) assert.equal(line.response.status_code, 200);
    assert.equal(readFileSync(join(dir, 'embedded.errors.jsonl'), 'utf8'), '');
    // Progress and notes went to stderr, never into the JSON on stdout.
    assert.match(result.stderr, /completed/);
    assert.match(result.stderr, /5 of 5 requests succeeded/);
  });

  it('writes results to stdout with -o -, keeps a given --data-dir, and reports per-line failures in the error file', async () => {
    const dataDir = makeTempDir('spool-cli-data-');
    const input = writeFixture(dir, 'mixed.jsonl', jsonl([chatLine('good', { model: 'echo' }), chatLine('unrouted', { model: 'no-such-model' })]));
    const errors = join(dir, 'mixed-errors.jsonl');
    const result = await cli(['run', input, '-o', '-', '--errors', errors, '--data-dir', dataDir]);
    expectExit(result, EXIT.ok, 'run -o -');
    const output = parseJsonl(result.stdout);
    assert.deepEqual(output.map((line) => line.custom_id), ['good']);
    const failed = parseJsonl(readFileSync(errors, 'utf8'));
    assert.deepEqual(failed.map((line) => line.custom_id), ['unrouted']);
    assert.equal(failed[0].error.code, 'invalid_model');
    assert.ok(readdirSync(dataDir).length > 0, 'the embedded server kept its database in --data-dir');
  });

  it('exits 1 for a missing input file, before starting anything', async () => {
    const result = await cli(['run', join(dir, 'no-such.jsonl')]);
    expectExit(result, EXIT.usage, 'missing input');
    assertOneLineError(result, /no such file: .*no-such\.jsonl/);
  });

  it('exits 2 when the input fails validation, and names the bad lines', async () => {
    const input = writeFixture(dir, 'invalid.jsonl', jsonl([chatLine('fine', { model: 'echo' }), '{"custom_id": "broken", "body": ']));
    const result = await cli(['run', input]);
    expectExit(result, EXIT.batchNotCompleted, 'invalid input');
    assert.match(result.stderr, /failed/);
    assert.match(result.stderr, /line 2/);
    assert.equal(existsSync(join(dir, 'invalid.output.jsonl')), false, 'a failed batch has no output file');
  });
});

describe('spool run --server', () => {
  it('uploads, follows and downloads against a running server', async () => {
    const input = writeFixture(dir, 'remote.jsonl', chatJsonl(3, { prefix: 'remote' }));
    const output = join(dir, 'remote-out.jsonl');
    const result = await cli(['run', input, '-o', output, '--interval', '0.1', ...remote]);
    expectExit(result, EXIT.ok, 'run --server');
    const lines = parseJsonl(readFileSync(output, 'utf8'));
    assert.deepEqual(lines.map((line) => line.custom_id).sort(), ['remote-1', 'remote-2', 'remote-3']);
    // Not a TTY: progress arrives as plain lines naming the batch, not as redraws.
    assert.doesNotMatch(result.stderr, /\x1b\[/, 'no terminal escapes when stderr is not a TTY');
    const batchId = /created batch (\S+)/.exec(result.stderr)?.[1];
    assert.ok(batchId, `stderr names the batch: ${result.stderr}`);
    assert.match(result.stderr, new RegExp(`${batchId}  100% \\| 3/3`));
    assert.ok(spool.upstream.stats.requests >= 3, 'the server sent the lines to its upstream');
  });

  it('reads the server and key from SPOOL_SERVER and SPOOL_API_KEY', async () => {
    const input = writeFixture(dir, 'env.jsonl', echoJsonl(1, 'env'));
    const result = await cli(['run', input, '--quiet', '--json'], { SPOOL_SERVER: spool.url, SPOOL_API_KEY: spool.apiKey });
    expectExit(result, EXIT.ok, 'run with env');
    assert.equal(parseJson(result).status, 'completed');
    assert.equal(result.stderr, '', '--quiet prints nothing on success');
  });

  it('cancels the batch on Ctrl-C, saves the partial results, and exits 130', async () => {
    const input = writeFixture(dir, 'interrupted.jsonl', chatJsonl(40, { prefix: 'slow' }));
    const run = startCli(['run', input, '--interval', '0.1', ...remote]);
    const created = await pollUntil(async () => /created batch (\S+)/.exec(run.stderr()), (match) => match !== null, { what: 'the run to create its batch' });
    const batchId = created![1];
    const getBatch = async () => (await callJson(`${spool.url}/openai/v1/batches/${batchId}`, spool.apiKey, 'GET')).json as Json;
    // Ctrl-C while requests are running, not before the first or after the last.
    await pollUntil(getBatch, (batch) => batch.request_counts.completed > 0, { what: 'the first result' });
    run.child.kill('SIGINT');
    const result = await run.done;
    expectExit(result, EXIT.interrupted, 'Ctrl-C');
    assert.match(result.stderr, /cancelling batch/);
    assert.equal((await getBatch()).status, 'cancelled');
    const done = parseJsonl(readFileSync(join(dir, 'interrupted.output.jsonl'), 'utf8'));
    const cancelled = parseJsonl(readFileSync(join(dir, 'interrupted.errors.jsonl'), 'utf8'));
    assert.ok(cancelled.length > 0 && cancelled.every((line) => line.error.code === 'batch_cancelled'));
    assert.equal(done.length + cancelled.length, 40, 'every line is in exactly one of the two files');
  });
});

describe('spool files', () => {
  it('uploads, lists, shows, downloads and deletes a file', async () => {
    const content = echoJsonl(2, 'files');
    const path = writeFixture(dir, 'upload-me.jsonl', content);

    const uploaded = await cli(['files', 'upload', path, '--json', ...remote]);
    expectExit(uploaded, EXIT.ok, 'files upload');
    const file = parseJson(uploaded);
    assert.equal(file.filename, 'upload-me.jsonl');
    assert.equal(file.bytes, Buffer.byteLength(content));

    const listed = await cli(['files', 'list', '--json', ...remote]);
    expectExit(listed, EXIT.ok, 'files list --json');
    assert.ok(parseJson(listed).some((entry: Json) => entry.id === file.id));

    const table = await cli(['files', 'list', '--purpose', 'batch', ...remote]);
    expectExit(table, EXIT.ok, 'files list');
    const [head, ...rows] = table.stdout.trimEnd().split('\n');
    assert.match(head, /^ID\s+FILENAME\s+PURPOSE\s+SIZE\s+CREATED$/);
    assert.ok(rows.some((row) => row.startsWith(file.id) && row.includes('upload-me.jsonl')), table.stdout);

    const shown = await cli(['files', 'get', file.id, '--json', ...remote]);
    expectExit(shown, EXIT.ok, 'files get');
    assert.equal(parseJson(shown).id, file.id);
    const fields = await cli(['files', 'get', file.id, ...remote]);
    assert.match(fields.stdout, new RegExp(`^id\\s+${file.id}$`, 'm'));

    const toStdout = await cli(['files', 'download', file.id, ...remote]);
    expectExit(toStdout, EXIT.ok, 'files download');
    assert.equal(toStdout.stdout, content);
    const target = join(dir, 'downloaded.jsonl');
    const toFile = await cli(['files', 'download', file.id, '-o', target, ...remote]);
    expectExit(toFile, EXIT.ok, 'files download -o');
    assert.equal(readFileSync(target, 'utf8'), content);
    assert.equal(toFile.stdout, '');
    assert.deepEqual(readdirSync(dir).filter((name) => name.includes('.partial-')), [], 'no partial download left behind');

    const deleted = await cli(['files', 'delete', file.id, '--json', ...remote]);
    expectExit(deleted, EXIT.ok, 'files delete');
    assert.deepEqual(parseJson(deleted), { id: file.id, object: 'file', deleted: true });
    const gone = await cli(['files', 'get', file.id, ...remote]);
    expectExit(gone, EXIT.notFound, 'files get after delete');
    assertOneLineError(gone, /HTTP 404/);
  });

  it('exits 4 with the server\'s message for a wrong API key', async () => {
    const result = await cli(['files', 'list', '--server', spool.url, '--api-key', 'not-a-real-key-123']);
    expectExit(result, EXIT.auth, 'wrong key');
    assertOneLineError(result, /HTTP 401/);
    assert.equal(result.stdout, '');
  });

  it('exits 3 when the server cannot be reached', async () => {
    const result = await cli(['files', 'list', '--server', `http://127.0.0.1:${await freePort()}`, '--api-key', spool.apiKey]);
    expectExit(result, EXIT.unreachable, 'unreachable');
    assertOneLineError(result, /cannot reach Spool at http:\/\/127\.0\.0\.1:\d+/);
  });

  it('exits 1 without an API key', async () => {
    const result = await cli(['files', 'list', '--server', spool.url]);
    expectExit(result, EXIT.usage, 'no key');
    assertOneLineError(result, /SPOOL_API_KEY/);
  });
});

describe('spool batches', () => {
  it('creates, lists, shows, waits for and downloads a batch', async () => {
    const upload = await cli(['files', 'upload', writeFixture(dir, 'batch-in.jsonl', chatJsonl(2, { prefix: 'b' })), ...remote]);
    expectExit(upload, EXIT.ok, 'files upload');
    const fileId = upload.stdout.trim();

    const created = await cli(['batches', 'create', fileId, ...remote]);
    expectExit(created, EXIT.ok, 'batches create');
    const batchId = created.stdout.trim();
    assert.match(batchId, /^batch/);

    const listed = await cli(['batches', 'list', '--json', ...remote]);
    expectExit(listed, EXIT.ok, 'batches list --json');
    assert.ok(parseJson(listed).some((batch: Json) => batch.id === batchId));
    const table = await cli(['batches', 'list', '--limit', '1', ...remote]);
    assert.match(table.stdout, /^ID\s+STATUS\s+PROGRESS\s+FAILED\s+ENDPOINT\s+CREATED\n/);
    assert.equal(table.stdout.trimEnd().split('\n').length, 2, '--limit 1 shows one batch');

    const waited = await cli(['batches', 'wait', batchId, '--interval', '0.1', '--json', ...remote]);
    expectExit(waited, EXIT.ok, 'batches wait');
    assert.equal(parseJson(waited).status, 'completed');

    const shown = await cli(['batches', 'get', batchId, ...remote]);
    expectExit(shown, EXIT.ok, 'batches get');
    assert.match(shown.stdout, /^status\s+completed$/m);
    assert.match(shown.stdout, /^progress\s+2\/2 \(100%\)$/m);

    const output = join(dir, 'b-out.jsonl');
    const errors = join(dir, 'b-err.jsonl');
    const downloaded = await cli(['batches', 'download', batchId, '-o', output, '--errors', errors, ...remote]);
    expectExit(downloaded, EXIT.ok, 'batches download');
    assert.deepEqual(parseJsonl(readFileSync(output, 'utf8')).map((line) => line.custom_id).sort(), ['b-1', 'b-2']);
    assert.equal(readFileSync(errors, 'utf8'), '');

    // A request the server refuses (409: nothing left to cancel) is the caller's to fix: exit 1.
    const late = await cli(['batches', 'cancel', batchId, ...remote]);
    expectExit(late, EXIT.usage, 'cancel a completed batch');
    assertOneLineError(late, /\(HTTP 409 batch_not_cancellable\)$/);
  });

  it('accepts the server URL in the forms people paste (…/openai/v1/, …/v1)', async () => {
    for (const server of [`${spool.url}/openai/v1/`, `${spool.url}/v1`]) {
      const result = await cli(['batches', 'list', '--json', '--server', server, '--api-key', spool.apiKey]);
      expectExit(result, EXIT.ok, `--server ${server}`);
      assert.ok(Array.isArray(parseJson(result)));
    }
  });

  it('times out a wait (124), cancels, and then reports the cancelled batch (2)', async () => {
    const upload = await cli(['files', 'upload', writeFixture(dir, 'long.jsonl', chatJsonl(40, { prefix: 'long' })), ...remote]);
    const created = await cli(['batches', 'create', upload.stdout.trim(), '--json', ...remote]);
    const batchId = parseJson(created).id as string;

    const impatient = await cli(['batches', 'wait', batchId, '--timeout', '0.5', '--interval', '0.1', '--quiet', ...remote]);
    expectExit(impatient, EXIT.timedOut, 'wait --timeout');
    assertOneLineError(impatient, /still (validating|in_progress)/);

    const cancelled = await cli(['batches', 'cancel', batchId, ...remote]);
    expectExit(cancelled, EXIT.ok, 'batches cancel');
    assert.match(cancelled.stdout, new RegExp(`^${batchId} (cancelling|cancelled)$`, 'm'));

    const waited = await cli(['batches', 'wait', batchId, '--interval', '0.1', '--json', ...remote]);
    expectExit(waited, EXIT.batchNotCompleted, 'wait on a cancelled batch');
    assert.equal(parseJson(waited).status, 'cancelled');

    // The partial results of a cancelled batch can still be saved.
    const output = join(dir, 'long-out.jsonl');
    const errors = join(dir, 'long-err.jsonl');
    const downloaded = await cli(['batches', 'download', batchId, '-o', output, '--errors', errors, ...remote]);
    expectExit(downloaded, EXIT.ok, 'download a cancelled batch');
    assert.equal(parseJsonl(readFileSync(output, 'utf8')).length + parseJsonl(readFileSync(errors, 'utf8')).length, 40);

    const again = await cli(['batches', 'cancel', batchId, '--json', ...remote]);
    assert.equal(parseJson(again).status, 'cancelled', 'cancelling a cancelled batch is a no-op');
  });

  it('exits 2 waiting for a batch that failed validation', async () => {
    const upload = await cli(['files', 'upload', writeFixture(dir, 'dupes.jsonl', jsonl([chatLine('same'), chatLine('same')])), ...remote]);
    const created = await cli(['batches', 'create', upload.stdout.trim(), ...remote]);
    const batchId = created.stdout.trim();
    const waited = await cli(['batches', 'wait', batchId, '--interval', '0.1', ...remote]);
    expectExit(waited, EXIT.batchNotCompleted, 'wait on a failed batch');
    assert.match(waited.stderr, /failed/);
    assert.match(waited.stderr, /line 2/);
    const downloaded = await cli(['batches', 'download', batchId, '-o', join(dir, 'dupes-out.jsonl'), ...remote]);
    expectExit(downloaded, EXIT.batchNotCompleted, 'download a failed batch');
  });

  it('exits 5 for an unknown batch id, with the server\'s message', async () => {
    for (const args of [['get'], ['wait'], ['cancel'], ['download']]) {
      const result = await cli(['batches', ...args, 'batch-does-not-exist', ...remote]);
      expectExit(result, EXIT.notFound, `batches ${args[0]} of an unknown id`);
      assertOneLineError(result, /batch-does-not-exist.*\(HTTP 404 not_found\)$/);
    }
  });
});

describe('spool keys', () => {
  it('creates, lists and revokes keys in a data directory, with --json for scripts', async () => {
    const dataDir = makeTempDir('spool-cli-keys-');
    const created = await cli(['keys', 'create', '--user', 'alice', '--data-dir', dataDir, '--json']);
    expectExit(created, EXIT.ok, 'keys create');
    const minted = parseJson(created);
    assert.equal(minted.user_id, 'alice');
    assert.equal(minted.is_admin, false);
    assert.match(minted.key, /^spool_/);

    const listed = await cli(['keys', 'list', '--data-dir', dataDir, '--json']);
    expectExit(listed, EXIT.ok, 'keys list --json');
    const [key] = parseJson(listed);
    assert.equal(key.id, minted.id);
    assert.equal(key.revoked_at, null);
    assert.ok(!('key_hash' in key) && !('key' in key), 'a listing never shows secrets or their hashes');
    const table = await cli(['keys', 'list', '--data-dir', dataDir]);
    assert.match(table.stdout, /^ID\s+PREFIX\s+USER\s+ADMIN\s+CREATED\s+STATE\n/);
    assert.match(table.stdout, new RegExp(`^${minted.id}\\s+\\S+…\\s+alice\\s+no\\s+\\S+\\s+active$`, 'm'));

    const revoked = await cli(['keys', 'revoke', minted.id, '--data-dir', dataDir]);
    expectExit(revoked, EXIT.ok, 'keys revoke');
    const again = await cli(['keys', 'revoke', minted.id, '--data-dir', dataDir]);
    expectExit(again, EXIT.notFound, 'revoking a revoked key');
    assertOneLineError(again, /no active key matches/);
  });
});
