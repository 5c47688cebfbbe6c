// Runs whisper.cpp (through @napi-rs/whisper) in a child process, one
// transcription at a time, queueing the rest.
//
// Why a child process rather than a worker thread: the binding's full() is
// synchronous, so it must leave the event loop either way, but it also cannot
// be interrupted (its abort callback never aborts), and a C++ exception inside
// whisper.cpp aborts the whole process it runs in. In a child, a cancelled or
// timed-out transcription is stopped by killing the child, and a crash costs
// one request (a 500) instead of the server. The parent never loads the
// binding, so a Spool without a whisper model pays nothing for it.
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { EngineLoadError, errorMessage, oneLine } from '../errors.ts';
import { WHISPER_CHILD_SOURCE } from './child-source.ts';

export interface WhisperProcessOptions {
  modelPath: string;
  /** false: never use a GPU (engine.gpu false); the linux-x64 prebuilt binary is CPU-only anyway. */
  useGpu: boolean;
}

export interface TranscribeRequest {
  language: string;
  translate: boolean;
  prompt: string;
  temperature: number;
  threads: number;
}

export interface ChildSegment {
  text: string;
  /** Centiseconds from the start of the audio. */
  start: number;
  end: number;
}

export interface ChildResult {
  text: string;
  segments: ChildSegment[];
  /** whisper's name for the language it transcribed ("english"), when it says. */
  language: string | null;
}

/** A request whisper.cpp itself refused (e.g. an unknown language): a 400, not an engine failure. */
export class WhisperRequestError extends Error {
  constructor(
    message: string,
    readonly param: string | null,
  ) {
    super(message);
    this.name = 'WhisperRequestError';
  }
}

type ChildMessage =
  | { type: 'ready' }
  | { type: 'load-failed'; message: string }
  | ({ type: 'result'; id: number } & ChildResult)
  | { type: 'failed'; id: number; status: number; message: string; param: string | null };

interface Job {
  /** Set once its samples are with the child: from then on only killing the child stops it. */
  sent: boolean;
  /** Called when the job's turn comes, so at most one decoded audio waits in memory. */
  samples: () => Promise<Float32Array>;
  request: TranscribeRequest;
  signal: AbortSignal;
  resolve(result: ChildResult): void;
  reject(error: Error): void;
}

interface Child {
  process: ChildProcess;
  /** The last lines it wrote to stderr: the reason, when it dies. */
  stderr: string[];
  exited: Promise<void>;
}

const STDERR_LINES = 5;

export class WhisperProcess {
  private readonly queue: Job[] = [];
  private child: Child | null = null;
  private running: Job | null = null;
  private closed = false;
  private nextId = 1;

  private constructor(
    private readonly options: WhisperProcessOptions,
    private readonly bindingPath: string,
  ) {}

  /** Starts the child and loads the model; an EngineLoadError with a one-line reason when that fails. */
  static async start(options: WhisperProcessOptions): Promise<WhisperProcess> {
    let bindingPath: string;
    try {
      bindingPath = createRequire(import.meta.url).resolve('@napi-rs/whisper');
    } catch (error) {
      throw new EngineLoadError('LOAD_FAILED', `the whisper.cpp binding (@napi-rs/whisper) is not installed: ${errorMessage(error)}`);
    }
    const whisper = new WhisperProcess(options, bindingPath);
    await whisper.spawnChild();
    return whisper;
  }

  /** Transcribes once the jobs before it are done; rejects with the signal's reason when it aborts first. */
  transcribe(samples: () => Promise<Float32Array>, request: TranscribeRequest, signal: AbortSignal): Promise<ChildResult> {
    if (this.closed) return Promise.reject(new Error('the whisper model is closed'));
    if (signal.aborted) return Promise.reject(abortReason(signal));
    return new Promise<ChildResult>((resolve, reject) => {
      const job: Job = { sent: false, samples, request, signal, resolve, reject };
      const onAbort = () => {
        const index = this.queue.indexOf(job);
        if (index !== -1) {
          this.queue.splice(index, 1);
          reject(abortReason(signal));
        } else if (this.running === job && job.sent) {
          // whisper.cpp cannot be interrupted: stop its process; the next job starts a fresh one.
          this.child?.process.kill('SIGKILL');
        }
        // A running job not yet sent notices the abort itself, between decoding and sending.
      };
      signal.addEventListener('abort', onAbort, { once: true });
      const settle = <T>(done: (value: T) => void) => (value: T) => {
        signal.removeEventListener('abort', onAbort);
        done(value);
      };
      job.resolve = settle(resolve);
      job.reject = settle(reject);
      this.queue.push(job);
      void this.pump();
    });
  }

  /** Rejects what is queued or running and stops the child at once (a transcription cannot be waited out). */
  async close(): Promise<void> {
    this.closed = true;
    const error = new Error('the whisper model is closed');
    for (const job of this.queue.splice(0)) job.reject(error);
    this.running?.reject(error);
    const child = this.child;
    if (child) {
      child.process.kill('SIGKILL');
      await child.exited;
    }
  }

  private async pump(): Promise<void> {
    if (this.running || this.closed) return;
    const job = this.queue.shift();
    if (!job) return;
    this.running = job;
    try {
      job.resolve(await this.run(job));
    } catch (error) {
      job.reject(job.signal.aborted ? abortReason(job.signal) : (error as Error));
    } finally {
      this.running = null;
      void this.pump();
    }
  }

  private async run(job: Job): Promise<ChildResult> {
    const samples = await job.samples();
    if (!this.child || !this.child.process.connected) await this.spawnChild();
    if (job.signal.aborted) throw abortReason(job.signal);
    const child = this.child!;
    const id = this.nextId++;
    return new Promise<ChildResult>((resolve, reject) => {
      if (!child.process.connected) {
        reject(new Error(`the whisper.cpp process stopped${describeStderr(child)}`));
        return;
      }
      const onMessage = (message: ChildMessage) => {
        if (!('id' in message) || message.id !== id) return;
        cleanup();
        if (message.type === 'result') resolve({ text: message.text, segments: message.segments, language: message.language });
        else if (message.status < 500) reject(new WhisperRequestError(message.message, message.param));
        else reject(new Error(message.message));
      };
      const onExit = () => {
        cleanup();
        reject(new Error(`the whisper.cpp process stopped mid-transcription${describeStderr(child)}`));
      };
      const cleanup = () => {
        child.process.off('message', onMessage);
        child.process.off('exit', onExit);
      };
      child.process.on('message', onMessage);
      child.process.on('exit', onExit);
      job.sent = true;
      child.process.send({ type: 'transcribe', id, samples, ...job.request });
    });
  }

  private spawnChild(): Promise<void> {
    // Plain `node -e`: none of the parent's flags (e.g. --import tsx), which would only slow its start.
    const proc = spawn(process.execPath, ['-e', WHISPER_CHILD_SOURCE], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'], serialization: 'advanced' });
    const exited = new Promise<void>((resolve) => {
      proc.once('exit', () => resolve());
      // A child that never started emits 'error' and no 'exit'.
      proc.once('error', () => {
        if (proc.pid === undefined) resolve();
      });
    });
    const child: Child = { process: proc, stderr: [], exited };
    proc.stderr!.setEncoding('utf8');
    proc.stderr!.on('data', (chunk: string) => {
      for (const line of chunk.split('\n')) {
        if (line.trim() === '') continue;
        child.stderr.push(line);
        if (child.stderr.length > STDERR_LINES) child.stderr.shift();
        process.stderr.write(`[whisper.cpp] ${line}\n`);
      }
    });
    // A send to a child that just died reports here; its exit is what the waiting job hears.
    proc.on('error', (error) => child.stderr.push(errorMessage(error)));
    this.child = child;
    const forget = () => {
      if (this.child === child) this.child = null;
    };
    void child.exited.then(forget);
    return new Promise((resolve, reject) => {
      const onMessage = (message: ChildMessage) => {
        if (message.type === 'ready') {
          cleanup();
          resolve();
        } else if (message.type === 'load-failed') {
          cleanup();
          forget();
          proc.kill('SIGKILL');
          reject(new EngineLoadError('LOAD_FAILED', `cannot load whisper model ${this.options.modelPath}: ${oneLine(message.message)}`));
        }
      };
      const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
        cleanup();
        forget();
        reject(new EngineLoadError('LOAD_FAILED', `cannot load whisper model ${this.options.modelPath}: the whisper.cpp process exited (${signal ?? `code ${code}`})${describeStderr(child)}`));
      };
      const onError = (error: Error) => {
        cleanup();
        forget();
        proc.kill('SIGKILL');
        reject(new EngineLoadError('LOAD_FAILED', `cannot start the whisper.cpp process: ${errorMessage(error)}`));
      };
      const cleanup = () => {
        proc.off('message', onMessage);
        proc.off('exit', onExit);
        proc.off('error', onError);
      };
      proc.on('message', onMessage);
      proc.on('exit', onExit);
      proc.on('error', onError);
      proc.send({ type: 'load', bindingPath: this.bindingPath, modelPath: this.options.modelPath, useGpu: this.options.useGpu });
    });
  }
}

function describeStderr(child: Child): string {
  const last = child.stderr.at(-1);
  return last ? `: ${oneLine(last)}` : '';
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('aborted');
}
