// Turns an audio line's file into what whisper.cpp takes: 16 kHz mono
// float32 samples. PCM and float WAV are decoded here; everything else goes
// through ffmpeg when it is installed. prepareAudio() checks what it can up
// front (so a bad file is refused without waiting its turn); decode() does
// the work when the transcription is about to run, so only the audio being
// transcribed is held decoded in memory.
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { AudioPayload } from '../../http-client.ts';
import { AudioDecodeError, decodeWithFfmpeg, FfmpegMissingError } from './ffmpeg.ts';
import { resampleTo16k, WHISPER_SAMPLE_RATE } from './resample.ts';
import { isWav, readWavFrames, readWavInfo, WavError, type WavInfo } from './wav.ts';

export { AudioDecodeError } from './ffmpeg.ts';

/** Longest audio transcribed: an hour is ~230 MB of samples in memory. */
export const MAX_AUDIO_SECONDS = 60 * 60;
const MAX_SAMPLES = MAX_AUDIO_SECONDS * WHISPER_SAMPLE_RATE;
// whisper.cpp skips input under one second ("input is too short"); shorter audio is padded with silence.
const MIN_SAMPLES = WHISPER_SAMPLE_RATE + WHISPER_SAMPLE_RATE / 100;
/** WAV frames converted between event-loop turns. */
const SLICE_FRAMES = 256 * 1024;

export interface DecodedAudio {
  /** 16 kHz mono, padded with silence to at least one second. */
  samples: Float32Array;
  /** How long the audio itself is, padding aside. */
  seconds: number;
}

export interface PreparedAudio {
  /** Rejects with an AudioDecodeError when the file cannot be decoded. */
  decode(signal: AbortSignal): Promise<DecodedAudio>;
}

const TOO_LONG = `The audio is longer than ${MAX_AUDIO_SECONDS / 60} minutes, the most the embedded engine transcribes in one request.`;

/** Throws an AudioDecodeError (a 400) for audio that cannot be used. */
export function prepareAudio(audio: AudioPayload): PreparedAudio {
  const bytes = audio.bytes;
  if (bytes.byteLength === 0) throw new AudioDecodeError('The audio file is empty.');
  if (!isWav(bytes)) return viaFfmpeg(bytes, `${describeFormat(bytes)}, not a PCM WAV file`);
  let info: WavInfo;
  try {
    info = readWavInfo(bytes);
  } catch (error) {
    if (error instanceof WavError && error.unsupportedEncoding) return viaFfmpeg(bytes, `a WAV file the engine cannot decode itself (${error.message})`);
    throw new AudioDecodeError(`The audio is not a valid WAV file: ${(error as Error).message}.`);
  }
  if (info.frames / info.sampleRate > MAX_AUDIO_SECONDS) throw new AudioDecodeError(TOO_LONG);
  return {
    async decode() {
      const mono = new Float32Array(info.frames);
      for (let from = 0; from < info.frames; from += SLICE_FRAMES) {
        readWavFrames(bytes, info, from, Math.min(info.frames, from + SLICE_FRAMES), mono);
        await nextTurn();
      }
      return padToMinimum(await resampleTo16k(mono, info.sampleRate));
    },
  };
}

function viaFfmpeg(bytes: Uint8Array, what: string): PreparedAudio {
  return {
    async decode(signal) {
      try {
        return padToMinimum(await decodeWithFfmpeg(bytes, MAX_SAMPLES, signal, TOO_LONG));
      } catch (error) {
        if (error instanceof FfmpegMissingError) {
          throw new AudioDecodeError(
            `The audio is ${what}; the embedded engine converts other formats with ffmpeg, which is not installed on this server. Send PCM WAV audio, or install ffmpeg on the server.`,
          );
        }
        throw error;
      }
    },
  };
}

function padToMinimum(samples: Float32Array): DecodedAudio {
  const seconds = samples.length / WHISPER_SAMPLE_RATE;
  if (samples.length >= MIN_SAMPLES) return { samples, seconds };
  const padded = new Float32Array(MIN_SAMPLES);
  padded.set(samples);
  return { samples: padded, seconds };
}

/** A name for the container, from its first bytes, for error messages. */
export function describeFormat(bytes: Uint8Array): string {
  const text = (start: number, length: number) => String.fromCharCode(...bytes.subarray(start, start + length));
  if (text(0, 3) === 'ID3' || (bytes[0] === 0xff && bytes.length > 1 && (bytes[1] & 0xe0) === 0xe0)) return 'MP3 audio';
  if (text(0, 4) === 'fLaC') return 'FLAC audio';
  if (text(0, 4) === 'OggS') return 'Ogg audio';
  if (text(4, 4) === 'ftyp') return 'MP4/M4A audio';
  if (bytes[0] === 0x1a && bytes[1] === 0x45 && bytes[2] === 0xdf && bytes[3] === 0xa3) return 'WebM/Matroska audio';
  if (text(0, 4) === 'RIFF') return 'a RIFF file that is not WAVE';
  return 'in an unrecognised format';
}
