// Child processes for the benchmarks (the Spool server, the simulated
// upstream), each a TypeScript module run under tsx with an IPC channel. The
// child announces itself with {type: 'ready', ...}; the parent then calls it
// by name ({id, call, payload} -> {id, result | error}) and stops it with a
// 'close' call. Every wait is bounded, and a child that will not go is killed.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface Reply {
  id: number;
  result?: unknown;
  error?: string;
}

export interface ChildHandle<Ready> {
  readonly label: string;
  readonly proc: ChildProcess;
  readonly pid: number;
  readonly ready: Ready;
  call<T>(name: string, payload?: unknown, timeoutMs?: number): Promise<T>;
  /** Asks the child to close and exit, waits up to `timeoutMs`, then kills it. Resolves to its exit code. */
  stop(timeoutMs?: number): Promise<number | null>;
}

export interface SpawnOptions {
  /** Extra node flags, e.g. --cpu-prof. */
  nodeArgs?: string[];
  env?: Record<string, string>;
  readyTimeoutMs?: number;
}

const children = new Set<ChildProcess>();

/** Kills every child still alive (the harness calls this on its way out, whatever happened). */
export function killAllChildren(): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) child.kill('SIGKILL');
  }
  children.clear();
}

export async function spawnChild<Ready>(label: string, script: string, options: SpawnOptions = {}): Promise<ChildHandle<Ready>> {
  // TypeScript runs through tsx, as bin/spool.js does; a prebuilt .mjs bundle runs on plain node.
  const loader = script.endsWith('.ts') ? ['--import', 'tsx'] : [];
  const proc = spawn(process.execPath, [...(options.nodeArgs ?? []), ...loader, script], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.add(proc);
  const exited = new Promise<number | null>((resolve) => {
    proc.once('exit', (code) => {
      children.delete(proc);
      resolve(code);
    });
  });
  const pending = new Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void }>();
  let nextId = 1;
  proc.on('message', (message: Reply | { type?: string }) => {
    const reply = message as Reply;
    if (typeof reply.id !== 'number') return;
    const waiter = pending.get(reply.id);
    if (!waiter) return;
    pending.delete(reply.id);
    if (reply.error !== undefined) waiter.reject(new Error(`${label}: ${reply.error}`));
    else waiter.resolve(reply.result);
  });
  void exited.then((code) => {
    for (const waiter of pending.values()) waiter.reject(new Error(`${label} exited (code ${code}) before answering`));
    pending.clear();
  });

  const ready = await new Promise<Ready>((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`${label} did not start within ${options.readyTimeoutMs ?? 30_000} ms`));
    }, options.readyTimeoutMs ?? 30_000);
    const onMessage = (message: { type?: string }) => {
      if (message?.type !== 'ready') return;
      clearTimeout(timer);
      proc.off('message', onMessage);
      resolve(message as Ready);
    };
    proc.on('message', onMessage);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${label} exited (code ${code}) before it was ready`));
    });
  });

  const call = <T>(name: string, payload?: unknown, timeoutMs = 30_000): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      if (!proc.connected) {
        reject(new Error(`${label} is not running`));
        return;
      }
      const id = nextId++;
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error(`${label} did not answer "${name}" within ${timeoutMs} ms`));
      }, timeoutMs);
      pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value as T);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      });
      proc.send({ id, call: name, payload });
    });

  let stopping: Promise<number | null> | undefined;
  const stop = (timeoutMs = 20_000): Promise<number | null> => {
    stopping ??= (async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      if (proc.connected) proc.send({ id: 0, call: 'close' });
      else proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    })();
    return stopping;
  };

  return { label, proc, pid: proc.pid!, ready, call, stop };
}

/**
 * The child's side: announce readiness, answer calls from `handlers`, and on
 * 'close' (or a disconnected parent) run `close` and exit.
 */
export function serveParent(ready: Record<string, unknown>, handlers: Record<string, (payload: unknown) => unknown>, close: () => Promise<void>): void {
  if (!process.send) throw new Error('run this module through the bench harness: it needs an IPC channel to its parent');
  let closing = false;
  const shutdown = (code: number) => {
    if (closing) return;
    closing = true;
    const force = setTimeout(() => process.exit(code === 0 ? 3 : code), 15_000);
    force.unref();
    close().then(
      () => process.exit(code),
      () => process.exit(1),
    );
  };
  process.on('message', (message: { id: number; call: string; payload?: unknown }) => {
    if (message.call === 'close') {
      shutdown(0);
      return;
    }
    const handler = handlers[message.call];
    Promise.resolve()
      .then(() => {
        if (!handler) throw new Error(`no handler for "${message.call}"`);
        return handler(message.payload);
      })
      .then(
        (result) => process.send?.({ id: message.id, result }),
        (err: unknown) => process.send?.({ id: message.id, error: err instanceof Error ? err.message : String(err) }),
      );
  });
  // The harness died or went away: do not linger.
  process.on('disconnect', () => shutdown(0));
  process.on('SIGTERM', () => shutdown(0));
  process.send({ ...ready, type: 'ready' });
}
