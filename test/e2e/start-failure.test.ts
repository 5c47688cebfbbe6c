// A Spool that cannot start (its port is taken) must fail start-up and leave
// nothing running behind it: no runner claiming work on a closed database, no
// sweeper or webhook loop, no listener. Embedders (and `spool run`) call
// startSpool in their own process and go on living after the error.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { startSpool } from '../../src/app.ts';
import { parseConfig } from '../../src/config.ts';
import { HARNESS_API_KEY, makeTempDir, pollUntil } from '../helpers/runner-harness.ts';

/** Timers and sockets this process holds, by kind. */
function resources(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const kind of process.getActiveResourcesInfo()) counts.set(kind, (counts.get(kind) ?? 0) + 1);
  return counts;
}

describe('start-up failure', () => {
  it('a taken port fails startSpool with EADDRINUSE and leaves no loop or listener running', async () => {
    const squatter = createServer();
    await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
    const port = (squatter.address() as AddressInfo).port;
    try {
      const before = resources();
      const config = parseConfig({ host: '127.0.0.1', port, dataDir: makeTempDir(), adminKey: HARNESS_API_KEY, log: { level: 'silent' } });
      await assert.rejects(startSpool(config), (err: NodeJS.ErrnoException) => err.code === 'EADDRINUSE');
      // Whatever start-up began is stopped: timers at once, the listener's handle once its close has run.
      const leftover = (now: Map<string, number>) =>
        ['Timeout', 'TCPServerWrap', 'TCPSocketWrap'].filter((kind) => (now.get(kind) ?? 0) > (before.get(kind) ?? 0));
      const after = await pollUntil(async () => resources(), (now) => leftover(now).length === 0, { deadlineMs: 10_000, what: 'start-up to leave no timer or socket behind' }).catch(
        () => resources(),
      );
      for (const kind of leftover(after)) assert.fail(`${kind}: ${before.get(kind) ?? 0} before start-up, ${after.get(kind)} after it failed`);
    } finally {
      await new Promise<void>((resolve) => squatter.close(() => resolve()));
    }
  });
});
