// Builds WAV files in memory for the audio tests: PCM (8, 16, 24, 32-bit)
// or IEEE float (32, 64-bit), any rate and channel count, and test signals.

export interface WavOptions {
  sampleRate?: number;
  channels?: number;
  bits?: 8 | 16 | 24 | 32 | 64;
  float?: boolean;
  /** Write WAVE_FORMAT_EXTENSIBLE (the format tag in a SubFormat GUID), as many recorders do. */
  extensible?: boolean;
  /** A chunk before "fmt " (e.g. "LIST"), which readers must skip. */
  extraChunk?: boolean;
  /** The format tag to declare instead (e.g. 7 for mu-law), with the samples left as they are. */
  formatTag?: number;
}

/** `channels` interleaved from per-channel sample arrays in [-1, 1]; each channel the same length. */
export function wavFile(channelsData: Float32Array[], options: WavOptions = {}): Buffer {
  const sampleRate = options.sampleRate ?? 16_000;
  const bits = options.bits ?? 16;
  const float = options.float ?? false;
  const channels = channelsData.length;
  const frames = channelsData[0].length;
  const sampleBytes = bits / 8;
  const data = Buffer.alloc(frames * channels * sampleBytes);
  let offset = 0;
  for (let frame = 0; frame < frames; frame += 1) {
    for (let channel = 0; channel < channels; channel += 1) {
      const value = Math.max(-1, Math.min(1, channelsData[channel][frame]));
      if (float && bits === 32) data.writeFloatLE(value, offset);
      else if (float) data.writeDoubleLE(value, offset);
      else if (bits === 8) data.writeUInt8(Math.round(value * 127) + 128, offset);
      else if (bits === 16) data.writeInt16LE(Math.round(value * 32767), offset);
      else if (bits === 24) data.writeIntLE(Math.round(value * 8388607), offset, 3);
      else data.writeInt32LE(Math.round(value * 2147483647), offset);
      offset += sampleBytes;
    }
  }
  const tag = options.formatTag ?? (float ? 3 : 1);
  const fmt = Buffer.alloc(options.extensible ? 40 : 16);
  fmt.writeUInt16LE(options.extensible ? 0xfffe : tag, 0);
  fmt.writeUInt16LE(channels, 2);
  fmt.writeUInt32LE(sampleRate, 4);
  fmt.writeUInt32LE(sampleRate * channels * sampleBytes, 8);
  fmt.writeUInt16LE(channels * sampleBytes, 12);
  fmt.writeUInt16LE(bits, 14);
  if (options.extensible) {
    fmt.writeUInt16LE(22, 16);
    fmt.writeUInt16LE(bits, 18);
    fmt.writeUInt32LE(channels === 1 ? 4 : 3, 20);
    fmt.writeUInt16LE(tag, 24);
    Buffer.from('000000001000800000aa00389b71', 'hex').copy(fmt, 26);
  }
  const chunk = (id: string, body: Buffer) => {
    const header = Buffer.alloc(8);
    header.write(id, 0, 'latin1');
    header.writeUInt32LE(body.length, 4);
    return Buffer.concat([header, body, body.length % 2 ? Buffer.alloc(1) : Buffer.alloc(0)]);
  };
  const body = Buffer.concat([
    Buffer.from('WAVE'),
    ...(options.extraChunk ? [chunk('LIST', Buffer.from('INFOISFT\x05\x00\x00\x00test\x00'))] : []),
    chunk('fmt ', fmt),
    chunk('data', data),
  ]);
  return Buffer.concat([Buffer.from('RIFF'), uint32(body.length), body]);
}

/** A sine at `hz` for `seconds`, amplitude 0.5, with a little seeded noise so it is not a pure tone. */
export function tone(hz: number, seconds: number, sampleRate = 16_000): Float32Array {
  const samples = new Float32Array(Math.round(seconds * sampleRate));
  let state = 12345;
  for (let i = 0; i < samples.length; i += 1) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    samples[i] = 0.5 * Math.sin((2 * Math.PI * hz * i) / sampleRate) + 0.02 * (state / 2 ** 32 - 0.5);
  }
  return samples;
}

/** A data: URL for `bytes`, as audio batch lines carry them. */
export function dataUrl(bytes: Buffer, contentType = 'audio/wav'): string {
  return `data:${contentType};base64,${bytes.toString('base64')}`;
}

function uint32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value);
  return b;
}
