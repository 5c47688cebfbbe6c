// The in-process Spool behind `spool run` without --server: the same server
// `spool serve` runs, on a loopback port of the OS's choosing, with a key made
// up for this one run, so one command turns a JSONL file into results.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSpool } from '../app.ts';
import { loadConfig } from '../config.ts';
import { upstreamsFromUrls } from '../upstreams/replicas.ts';

export interface EmbeddedOptions {
  /** Keep the database and files here; without it a temporary directory is used and removed afterwards. */
  dataDir?: string;
  config?: string;
  /** Every model goes to this server; several: a pool of replicas. */
  upstream?: string[];
  model?: string[];
  modelName?: string[];
}

export interface EmbeddedSpool {
  url: string;
  apiKey: string;
  dataDir: string;
  close(): Promise<void>;
  /** For an exit that cannot wait for close (a second Ctrl-C): drop the temporary data dir now. */
  discardSync(): void;
}

export async function startEmbeddedSpool(options: EmbeddedOptions): Promise<EmbeddedSpool> {
  const temporary = options.dataDir === undefined;
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'spool-run-'));
  const discardSync = () => {
    if (temporary) rmSync(dataDir, { recursive: true, force: true });
  };
  const apiKey = `spool_run_${randomBytes(18).toString('base64url')}`;
  try {
    const loaded = loadConfig({
      configPath: options.config,
      env: withoutStorageSettings(process.env),
      flags: {
        host: '127.0.0.1',
        port: 0,
        dataDir,
        // Accepted as user "default" for this run only; no key is minted or written into the data dir.
        adminKey: apiKey,
        // The server logs to stdout, which `spool run -o -` may be using for results; the batch's
        // error file carries every per-request failure anyway.
        log: { level: 'silent' },
        upstreams: upstreamsFromUrls(options.upstream ?? []),
        engine: options.model?.length ? { models: engineModels(options.model, options.modelName ?? []) } : undefined,
      },
    });
    // Likewise for storage in a config file (a server's, passed for its upstreams).
    const config = { ...loaded, databaseUrl: undefined, blobs: { ...loaded.blobs, kind: 'local' as const } };
    const app = await startSpool(config);
    return {
      url: app.url,
      apiKey,
      dataDir,
      async close() {
        try {
          await app.close();
        } finally {
          discardSync();
        }
      },
      discardSync,
    };
  } catch (err) {
    discardSync();
    throw err;
  }
}

/**
 * A throwaway server keeps everything in its own data dir: a DATABASE_URL or an S3 bucket in the environment
 * belongs to some real deployment, whose database this run must never migrate or write to.
 */
function withoutStorageSettings(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const kept: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(env)) {
    if (name === 'DATABASE_URL' || name === 'SPOOL_DATABASE_URL' || name.startsWith('SPOOL_BLOBS__')) continue;
    kept[name] = value;
  }
  return kept;
}

/** --model PATH [--model-name NAME] pairs, as `spool serve` takes them: the n-th name names the n-th model. */
function engineModels(paths: string[], names: string[]) {
  return paths.map((path, index) => (names[index] ? { path, name: names[index] } : { path }));
}
