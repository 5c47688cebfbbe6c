// The response bodies of OpenAI's audio endpoints, per response_format:
//   json          { text, usage: { type: 'duration', seconds } }
//   verbose_json  { task, language, duration, text, segments, usage }
//   text          the text
//   srt, vtt      subtitles, one cue per whisper segment
// verbose_json segments carry id, start, end (seconds) and text. OpenAI's
// segments also have seek, tokens, temperature, avg_logprob,
// compression_ratio and no_speech_prob; the binding does not expose what they
// are computed from, so they are left out rather than made up.
import type { ChildResult, ChildSegment } from './process.ts';
import type { ResponseFormat, TranscriptionParams } from './request.ts';

export interface Transcript extends ChildResult {
  /** Seconds of audio, before any padding. */
  duration: number;
}

export function renderTranscript(params: TranscriptionParams, transcript: Transcript): unknown {
  const text = transcript.text.trim();
  // whisper.cpp may end the last segment at its 30-second window rather than at the end of the audio.
  const limit = Math.ceil(transcript.duration * 100);
  const segments = transcript.segments
    .filter((segment) => segment.text.trim() !== '')
    .map((segment) => ({ ...segment, start: Math.min(segment.start, limit), end: Math.min(segment.end, limit) }));
  const usage = { type: 'duration', seconds: Math.ceil(transcript.duration) };
  const format: ResponseFormat = params.format;
  switch (format) {
    case 'text':
      return text;
    case 'srt':
      return segments.map((segment, index) => `${index + 1}\n${timestamp(segment.start, ',')} --> ${timestamp(segment.end, ',')}\n${segment.text.trim()}\n\n`).join('');
    case 'vtt':
      return `WEBVTT\n\n${segments.map((segment) => `${timestamp(segment.start, '.')} --> ${timestamp(segment.end, '.')}\n${segment.text.trim()}\n\n`).join('')}`;
    case 'verbose_json':
      return {
        task: params.task,
        language: params.task === 'translate' ? 'english' : (transcript.language ?? params.language ?? 'english'),
        duration: round2(transcript.duration),
        text,
        segments: segments.map((segment, id) => verboseSegment(segment, id)),
        usage,
      };
    case 'json':
      return { text, usage };
  }
}

/** OpenAI's segment texts start with the space that separates them from the one before. */
function verboseSegment(segment: ChildSegment, id: number) {
  return {
    id,
    start: segment.start / 100,
    end: segment.end / 100,
    text: ` ${segment.text.trim()}`,
  };
}

/** hh:mm:ss,mmm (SRT) or hh:mm:ss.mmm (WebVTT) from centiseconds. */
function timestamp(centiseconds: number, separator: ',' | '.'): string {
  const ms = Math.max(0, Math.round(centiseconds * 10));
  const pad = (value: number, width = 2) => String(value).padStart(width, '0');
  return `${pad(Math.floor(ms / 3_600_000))}:${pad(Math.floor((ms % 3_600_000) / 60_000))}:${pad(Math.floor((ms % 60_000) / 1000))}${separator}${pad(ms % 1000, 3)}`;
}

function round2(value: number): number {
  return Math.round(value * 100) / 100;
}
