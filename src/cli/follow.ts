// Polls a batch until it reaches a final state. A batch can run for hours, so
// a server that restarts or a network that blips meanwhile must not end the
// watch: connection failures are retried for a while before giving up.
import { setTimeout as sleep } from 'node:timers/promises';
import { isTerminal } from './batch-view.ts';
import type { SpoolClient, WireBatch } from './client.ts';
import { CliError, ExitCode } from './exit-codes.ts';
import { formatDuration } from './output.ts';

/** How long the server may stay unreachable during a watch before the CLI gives up (exit 3). */
const RECONNECT_WINDOW_MS = 120_000;

export interface FollowOptions {
  intervalMs: number;
  /** Give up (exit 124) once this much time has passed without a final state. */
  timeoutMs?: number;
  onUpdate(batch: WireBatch): void;
  /** Told once per outage that the server is unreachable and polling goes on. */
  onOutage?(message: string): void;
}

export async function followBatch(client: SpoolClient, batchId: string, options: FollowOptions): Promise<WireBatch> {
  const giveUpAt = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
  let outageSince: number | undefined;
  for (;;) {
    let batch: WireBatch | undefined;
    try {
      batch = await client.getBatch(batchId);
      outageSince = undefined;
    } catch (err) {
      if (!(err instanceof CliError) || err.exitCode !== ExitCode.unreachable) throw err;
      const now = Date.now();
      if (outageSince === undefined) {
        outageSince = now;
        options.onOutage?.(`${err.message}; retrying for up to ${formatDuration(RECONNECT_WINDOW_MS / 1000)}`);
      } else if (now - outageSince > RECONNECT_WINDOW_MS) throw err;
    }
    if (batch) {
      options.onUpdate(batch);
      if (isTerminal(batch)) return batch;
    }
    if (Date.now() >= giveUpAt) {
      throw new CliError(`batch ${batchId} is still ${batch?.status ?? 'running'} after ${formatDuration(options.timeoutMs! / 1000)}; it goes on running on the server`, ExitCode.timedOut);
    }
    await sleep(Math.min(options.intervalMs, Math.max(0, giveUpAt - Date.now())));
  }
}
