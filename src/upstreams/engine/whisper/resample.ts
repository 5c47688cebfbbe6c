// Sample-rate conversion to the 16 kHz whisper works at: a polyphase
// windowed-sinc filter (Blackman window, 8 zero crossings), its cutoff just
// under the lower of the two Nyquist rates so downsampling does not alias.
// The input rate and 16 kHz reduce to up/down, so the filter needs only `up`
// distinct phases, computed once per call.
import { setImmediate as nextTurn } from 'node:timers/promises';

export const WHISPER_SAMPLE_RATE = 16_000;

const ZERO_CROSSINGS = 8;
// Leaves a transition band below Nyquist for the window's roll-off.
const CUTOFF = 0.95;
/** Output samples computed between event-loop turns: a few milliseconds of work. */
const SLICE = 64 * 1024;

/** `input` (mono, at `rate`) resampled to 16 kHz; long inputs yield to the event loop between slices. */
export async function resampleTo16k(input: Float32Array, rate: number): Promise<Float32Array> {
  if (rate === WHISPER_SAMPLE_RATE) return input;
  const divisor = gcd(rate, WHISPER_SAMPLE_RATE);
  const up = WHISPER_SAMPLE_RATE / divisor;
  const down = rate / divisor;
  const cutoff = Math.min(1, up / down) * CUTOFF;
  const half = Math.ceil(ZERO_CROSSINGS / cutoff);
  const taps = 2 * half;
  const table = filterTable(up, taps, half, cutoff);

  const output = new Float32Array(Math.floor((input.length * up) / down));
  for (let start = 0; start < output.length; start += SLICE) {
    const end = Math.min(output.length, start + SLICE);
    for (let n = start; n < end; n += 1) {
      const position = n * down;
      const first = Math.floor(position / up) - half + 1;
      const row = (position % up) * taps;
      let sum = 0;
      // Taps outside the input read as silence.
      const from = Math.max(0, -first);
      const to = Math.min(taps, input.length - first);
      for (let j = from; j < to; j += 1) sum += input[first + j] * table[row + j];
      output[n] = sum;
    }
    if (end < output.length) await nextTurn();
  }
  return output;
}

/** up phases x taps coefficients; each phase sums to 1 so silence stays silence and levels are kept. */
function filterTable(up: number, taps: number, half: number, cutoff: number): Float32Array {
  const table = new Float32Array(up * taps);
  for (let phase = 0; phase < up; phase += 1) {
    let sum = 0;
    for (let j = 0; j < taps; j += 1) {
      const tau = phase / up + (half - 1 - j);
      const value = cutoff * sinc(cutoff * tau) * blackman(tau / half);
      table[phase * taps + j] = value;
      sum += value;
    }
    for (let j = 0; j < taps; j += 1) table[phase * taps + j] /= sum;
  }
  return table;
}

function sinc(x: number): number {
  if (x === 0) return 1;
  const px = Math.PI * x;
  return Math.sin(px) / px;
}

/** The Blackman window over [-1, 1]; zero outside. */
function blackman(x: number): number {
  if (x <= -1 || x >= 1) return 0;
  return 0.42 + 0.5 * Math.cos(Math.PI * x) + 0.08 * Math.cos(2 * Math.PI * x);
}

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}
