// Reads RIFF/WAVE files holding PCM (8, 16, 24 or 32-bit integers) or IEEE
// floats (32 or 64-bit), including WAVE_FORMAT_EXTENSIBLE with those
// subformats. Other WAV encodings (mu-law, A-law, ADPCM...) are left to
// ffmpeg, like every other container. Samples come out as mono float32
// (channels averaged) at the file's own rate; resample.ts takes it to 16 kHz.

export interface WavInfo {
  sampleRate: number;
  channels: number;
  /** Bits per sample of one channel. */
  bits: number;
  float: boolean;
  /** The data chunk: where the frames start and how many there are. */
  dataOffset: number;
  frames: number;
}

/** Why a WAV file cannot be decoded here, as a clause ("it has no data chunk"); `unsupportedEncoding` ones may still decode through ffmpeg. */
export class WavError extends Error {
  constructor(
    message: string,
    readonly unsupportedEncoding = false,
  ) {
    super(message);
    this.name = 'WavError';
  }
}

const FORMAT_PCM = 1;
const FORMAT_FLOAT = 3;
const FORMAT_EXTENSIBLE = 0xfffe;

export function isWav(bytes: Uint8Array): boolean {
  return bytes.length >= 12 && ascii(bytes, 0, 4) === 'RIFF' && ascii(bytes, 8, 4) === 'WAVE';
}

/** The format and where the samples are; throws WavError for a file this module cannot read. */
export function readWavInfo(bytes: Uint8Array): WavInfo {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let format: { tag: number; channels: number; sampleRate: number; blockAlign: number; bits: number } | null = null;
  let offset = 12;
  while (offset + 8 <= bytes.length) {
    const id = ascii(bytes, offset, 4);
    const size = view.getUint32(offset + 4, true);
    const body = offset + 8;
    if (id === 'fmt ') {
      if (size < 16 || body + 16 > bytes.length) throw new WavError('its "fmt " chunk is malformed');
      let tag = view.getUint16(body, true);
      // WAVE_FORMAT_EXTENSIBLE keeps the real format in the first two bytes of its SubFormat GUID.
      if (tag === FORMAT_EXTENSIBLE && size >= 40 && body + 26 <= bytes.length) tag = view.getUint16(body + 24, true);
      format = {
        tag,
        channels: view.getUint16(body + 2, true),
        sampleRate: view.getUint32(body + 4, true),
        blockAlign: view.getUint16(body + 12, true),
        bits: view.getUint16(body + 14, true),
      };
    } else if (id === 'data') {
      if (!format) throw new WavError('its "data" chunk comes before its "fmt " chunk');
      // Streamed WAVs often leave the size at 0 or 0xFFFFFFFF: the data then runs to the end of the file.
      const available = bytes.length - body;
      const length = size === 0 || size > available ? available : size;
      return checkFormat(format, body, length);
    }
    // Chunks are padded to an even length.
    offset = body + size + (size % 2);
  }
  throw new WavError(format ? 'it has no "data" chunk' : 'it has no "fmt " chunk');
}

function checkFormat(format: { tag: number; channels: number; sampleRate: number; blockAlign: number; bits: number }, dataOffset: number, length: number): WavInfo {
  const { tag, channels, sampleRate, bits } = format;
  const float = tag === FORMAT_FLOAT;
  if (tag !== FORMAT_PCM && tag !== FORMAT_FLOAT) throw new WavError(`its encoding (format tag ${tag}) is not PCM or float`, true);
  if (float ? bits !== 32 && bits !== 64 : bits !== 8 && bits !== 16 && bits !== 24 && bits !== 32) {
    throw new WavError(`its ${bits}-bit ${float ? 'float' : 'PCM'} samples are not supported`, true);
  }
  if (channels < 1) throw new WavError('it declares no channels');
  if (sampleRate < 1000 || sampleRate > 768_000) throw new WavError(`its sample rate (${sampleRate} Hz) is not a usable audio rate`);
  const frameBytes = (bits / 8) * channels;
  if (format.blockAlign !== 0 && format.blockAlign !== frameBytes) throw new WavError(`its block size (${format.blockAlign}) does not match its ${channels} channel(s) of ${bits} bits`, true);
  return { sampleRate, channels, bits, float, dataOffset, frames: Math.floor(length / frameBytes) };
}

/**
 * Frames [from, to) of the data chunk, channels averaged, into `out` at
 * `from`. Works in ranges so a long file can be converted a slice at a time
 * between event-loop turns.
 */
export function readWavFrames(bytes: Uint8Array, info: WavInfo, from: number, to: number, out: Float32Array): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const { channels, bits, float } = info;
  const sampleBytes = bits / 8;
  const read = sampleReader(view, bits, float);
  const scale = 1 / channels;
  let position = info.dataOffset + from * sampleBytes * channels;
  for (let frame = from; frame < to; frame += 1) {
    let sum = 0;
    for (let channel = 0; channel < channels; channel += 1) {
      sum += read(position);
      position += sampleBytes;
    }
    out[frame] = sum * scale;
  }
}

function sampleReader(view: DataView, bits: number, float: boolean): (position: number) => number {
  if (float) return bits === 32 ? (p) => view.getFloat32(p, true) : (p) => view.getFloat64(p, true);
  switch (bits) {
    case 8:
      // 8-bit WAV is unsigned, centred on 128.
      return (p) => (view.getUint8(p) - 128) / 128;
    case 16:
      return (p) => view.getInt16(p, true) / 32768;
    case 24:
      return (p) => (view.getUint8(p) | (view.getUint8(p + 1) << 8) | (view.getInt8(p + 2) << 16)) / 8388608;
    default:
      return (p) => view.getInt32(p, true) / 2147483648;
  }
}

function ascii(bytes: Uint8Array, offset: number, length: number): string {
  return String.fromCharCode(...bytes.subarray(offset, offset + length));
}
