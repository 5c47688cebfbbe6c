// The live progress display of `spool run` and `spool batches wait`, on
// stderr. cli-progress does the terminal work (redraw in place, throttling,
// hidden when nothing is attached); on a stream that is not a TTY (CI logs,
// `2> file`) it prints one plain line every few seconds instead of redrawing.
import cliProgress from 'cli-progress';
import type { WireBatch } from './client.ts';
import { doneCount } from './batch-view.ts';
import { formatDuration } from './output.ts';

// Throughput is measured over this recent window, so the rate and ETA follow a
// batch that speeds up or slows down instead of averaging over its whole life.
const RATE_WINDOW_MS = 30_000;
const NOT_TTY_LINE_EVERY_MS = 5_000;
const MIN_BAR_WIDTH = 10;
const MAX_BAR_WIDTH = 40;
// Columns left for the percentage, counts, rate, ETA and failures on the bar's line.
const NUMBERS_ROOM = 55;

interface Payload {
  label: string;
  status: string;
  done: number;
  total: number;
  failed: number;
  rate: number | null;
  etaSeconds: number | null;
}

export class BatchProgress {
  private readonly tty: boolean;
  private readonly bar: cliProgress.SingleBar | undefined;
  private started = false;
  private samples: Array<{ at: number; done: number }> = [];

  constructor(options: { enabled: boolean; stream?: NodeJS.WriteStream }) {
    const stream = options.stream ?? process.stderr;
    this.tty = stream.isTTY === true;
    if (!options.enabled) return;
    this.bar = new cliProgress.SingleBar({
      stream,
      format: (_options, params, payload) => this.render(payload as Payload, params.maxWidth),
      fps: 5,
      // Redraw on every tick even when the counts are unchanged, so a line that `log` printed never leaves the bar blank.
      forceRedraw: this.tty,
      noTTYOutput: true,
      notTTYSchedule: NOT_TTY_LINE_EVERY_MS,
      clearOnComplete: true,
      hideCursor: this.tty,
    });
  }

  update(batch: WireBatch): void {
    if (!this.bar) return;
    const now = Date.now();
    const done = doneCount(batch);
    this.samples.push({ at: now, done });
    while (this.samples.length > 2 && now - this.samples[0].at > RATE_WINDOW_MS) this.samples.shift();
    const first = this.samples[0];
    const elapsed = (now - first.at) / 1000;
    const rate = batch.status === 'in_progress' && elapsed >= 1 ? (done - first.done) / elapsed : null;
    const total = batch.request_counts.total;
    const payload: Payload = {
      label: batch.id,
      status: batch.status,
      done,
      total,
      failed: batch.request_counts.failed,
      rate,
      etaSeconds: rate && rate > 0 ? (total - done) / rate : null,
    };
    if (!this.started) {
      this.started = true;
      this.bar.start(Math.max(total, 1), done, payload);
    } else {
      this.bar.setTotal(Math.max(total, 1));
      this.bar.update(done, payload);
    }
  }

  /** Prints a message without tearing the bar: on a TTY the bar redraws below it on its next tick. */
  log(message: string): void {
    process.stderr.write(this.tty && this.started ? `\r\x1b[2K${message}\n` : `${message}\n`);
  }

  stop(): void {
    if (this.started) this.bar?.stop();
    this.started = false;
  }

  /** On a TTY: a bar sized to fit the terminal, then the numbers. Elsewhere: the batch id and the numbers, as a log line. */
  private render(payload: Payload, width: number): string {
    const label = this.tty ? '' : `${payload.label}  `;
    if (payload.total === 0) return `${label}${payload.status === 'validating' ? 'validating input' : payload.status}`;
    const fraction = Math.min(1, payload.done / payload.total);
    const percent = `${String(Math.floor(fraction * 100)).padStart(this.tty ? 3 : 0)}%`;
    const parts = [`${payload.done}/${payload.total}`];
    if (payload.rate !== null) parts.push(`${payload.rate.toFixed(payload.rate < 10 ? 1 : 0)}/s`);
    if (payload.etaSeconds !== null && payload.done < payload.total) parts.push(`ETA ${formatDuration(payload.etaSeconds)}`);
    parts.push(`${payload.failed} failed`);
    if (payload.status !== 'in_progress') parts.push(payload.status);
    const numbers = parts.join(' | ');
    if (!this.tty) return `${label}${percent} | ${numbers}`;
    // Sized from the terminal alone, not from the numbers beside it, so the bar does not jump as they grow.
    const barWidth = Math.max(MIN_BAR_WIDTH, Math.min(MAX_BAR_WIDTH, width - NUMBERS_ROOM));
    const filled = Math.round(fraction * barWidth);
    return `${'█'.repeat(filled)}${'░'.repeat(barWidth - filled)} ${percent} | ${numbers}`;
  }
}
