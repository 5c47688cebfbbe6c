// When another process's liveness row says it is dead, with real pids.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { deathReason, thisHostKey } from '../../src/runtime/liveness.ts';

const TIMING = { heartbeatMs: 1000, timeoutMs: 15_000 };

/** The pid of a process that has exited. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(child.stdout);
}

describe('death reasons', () => {
  it('on this host: a pid that is gone is dead at once, one that runs is not', () => {
    assert.equal(deathReason({ host: thisHostKey(), pid: deadPid(), lock_key: null }, 0, undefined, TIMING), 'process gone');
    assert.equal(deathReason({ host: thisHostKey(), pid: process.ppid, lock_key: null }, 0, undefined, TIMING), undefined);
  });

  it('on this host with our own pid but another id: a previous life of this process (a restarted container is pid 1 again)', () => {
    assert.equal(deathReason({ host: thisHostKey(), pid: process.pid, lock_key: null }, 0, undefined, TIMING), 'process gone');
  });

  it('on another host: the pid means nothing here', () => {
    assert.equal(deathReason({ host: 'elsewhere pid:[1]', pid: deadPid(), lock_key: null }, 0, undefined, TIMING), undefined);
  });

  it('a liveness lock that is gone kills only after two beats without a move (a session being reopened is not death)', () => {
    const row = { host: 'elsewhere', pid: 7, lock_key: 42 };
    assert.equal(deathReason(row, 1999, new Set([1]), TIMING), undefined);
    assert.equal(deathReason(row, 2000, new Set([1]), TIMING), 'liveness session ended');
    assert.equal(deathReason(row, 14_000, new Set([42]), TIMING), undefined, 'a held lock keeps a paused process alive');
  });

  it('a row that has not moved for the timeout is dead whatever its lock says (a host that vanished keeps its TCP session open)', () => {
    assert.equal(deathReason({ host: 'elsewhere', pid: 7, lock_key: 42 }, 15_000, new Set([42]), TIMING), 'no heartbeat');
    assert.equal(deathReason({ host: 'elsewhere', pid: 7, lock_key: null }, 15_000, undefined, TIMING), 'no heartbeat');
    assert.equal(deathReason({ host: 'elsewhere', pid: 7, lock_key: null }, 14_999, undefined, TIMING), undefined);
  });
});
