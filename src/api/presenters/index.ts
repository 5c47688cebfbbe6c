// Picks the presenter for the dialect a request speaks. Routes call these and
// never build wire objects themselves.
import type { BatchRow, FileRow, WireDialect } from '../../store/sql/schema.ts';
import { presentMessageBatch } from '../anthropic/message-batch.ts';
import type { Dialect } from '../dialect.ts';
import { openaiBatch, openaiFile } from './openai.ts';
import { togetherBatch, togetherFile } from './together.ts';

export function presentFile(dialect: Dialect, file: FileRow) {
  return dialect === 'openai' ? openaiFile(file) : togetherFile(file);
}

export function presentBatch(dialect: WireDialect, batch: BatchRow) {
  if (dialect === 'anthropic') return presentMessageBatch(batch);
  return dialect === 'openai' ? openaiBatch(batch) : togetherBatch(batch);
}
