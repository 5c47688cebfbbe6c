// Hands out the sequences of one llama.cpp context, one request at a time
// each. A context with N sequences evaluates whatever its busy sequences have
// pending in one batch per step, so N requests running at once share the
// model's weights pass by pass (continuous batching): a request that finishes
// frees its sequence for the next one without waiting for the others.
//
// Waiters are served first come, first served, urgent ones (real-time
// requests, whose caller is waiting) before the rest. A free sequence is chosen by
// how much of the new prompt its KV cache already holds, so requests that
// share a prefix (a system prompt, the same prompt with n > 1) skip
// re-evaluating it.
import type { LlamaContextSequence, Token } from 'node-llama-cpp';

export interface SequenceLease {
  readonly sequence: LlamaContextSequence;
  /** Gives the sequence back; a second call does nothing. */
  release(): void;
}

interface Waiter {
  prefer: readonly Token[] | undefined;
  urgent: boolean;
  resolve(lease: SequenceLease): void;
  reject(error: Error): void;
  signal: AbortSignal | undefined;
  onAbort: () => void;
}

export class SequencePoolClosedError extends Error {
  constructor() {
    super('the sequence pool is closed');
    this.name = 'SequencePoolClosedError';
  }
}

export class SequencePool {
  private readonly free: LlamaContextSequence[];
  private readonly waiters: Waiter[] = [];
  private closed = false;

  constructor(private readonly sequences: readonly LlamaContextSequence[]) {
    if (sequences.length === 0) throw new RangeError('a sequence pool needs at least one sequence');
    this.free = [...sequences];
  }

  get size(): number {
    return this.sequences.length;
  }

  get available(): number {
    return this.free.length;
  }

  get waiting(): number {
    return this.waiters.length;
  }

  /**
   * A free sequence, or the next one to come free. Rejects with the signal's
   * reason when it aborts first, and with SequencePoolClosedError after close().
   * `prefer`: the prompt about to be evaluated, to pick the sequence whose cache matches it best.
   * `urgent`: queue ahead of every waiter that is not urgent.
   */
  acquire(options: { prefer?: readonly Token[]; signal?: AbortSignal; urgent?: boolean } = {}): Promise<SequenceLease> {
    if (this.closed) return Promise.reject(new SequencePoolClosedError());
    if (options.signal?.aborted) return Promise.reject(abortReason(options.signal));
    if (this.free.length > 0 && this.waiters.length === 0) return Promise.resolve(this.lease(this.take(options.prefer)));
    return new Promise<SequenceLease>((resolve, reject) => {
      const waiter: Waiter = {
        prefer: options.prefer,
        urgent: options.urgent === true,
        resolve,
        reject,
        signal: options.signal,
        onAbort: () => {
          const index = this.waiters.indexOf(waiter);
          if (index !== -1) this.waiters.splice(index, 1);
          reject(abortReason(options.signal!));
        },
      };
      options.signal?.addEventListener('abort', waiter.onAbort, { once: true });
      if (waiter.urgent) {
        const firstPatient = this.waiters.findIndex((other) => !other.urgent);
        this.waiters.splice(firstPatient === -1 ? this.waiters.length : firstPatient, 0, waiter);
      } else {
        this.waiters.push(waiter);
      }
    });
  }

  /** Refuses new requests and rejects every waiter; leased sequences stay with their holders. */
  close(): void {
    this.closed = true;
    for (const waiter of this.waiters.splice(0)) {
      waiter.signal?.removeEventListener('abort', waiter.onAbort);
      waiter.reject(new SequencePoolClosedError());
    }
  }

  private take(prefer: readonly Token[] | undefined): LlamaContextSequence {
    let best = 0;
    if (prefer && prefer.length > 0 && this.free.length > 1) {
      let bestShared = -1;
      for (const [index, sequence] of this.free.entries()) {
        const shared = sequence.compareContextTokens(prefer as Token[]).firstDifferentIndex;
        if (shared > bestShared) {
          bestShared = shared;
          best = index;
        }
      }
    }
    return this.free.splice(best, 1)[0];
  }

  private lease(sequence: LlamaContextSequence): SequenceLease {
    let released = false;
    return {
      sequence,
      release: () => {
        if (released) return;
        released = true;
        this.giveBack(sequence);
      },
    };
  }

  private giveBack(sequence: LlamaContextSequence): void {
    this.free.push(sequence);
    const waiter = this.waiters.shift();
    if (!waiter) return;
    waiter.signal?.removeEventListener('abort', waiter.onAbort);
    waiter.resolve(this.lease(this.take(waiter.prefer)));
  }
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('aborted');
}
