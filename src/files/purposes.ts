// Purposes a client may name on upload, in either dialect, mapped to ours.
import { badRequest } from '../errors.ts';
import type { FilePurpose } from '../store/sql/schema.ts';

const ACCEPTED: Record<string, FilePurpose> = {
  batch: 'batch',
  'batch-api': 'batch',
  batch_output: 'batch_output',
  'fine-tune': 'fine-tune',
  eval: 'eval',
  evals: 'eval',
  'eval-output': 'eval-output',
};

export function parsePurpose(value: unknown, param = 'purpose'): FilePurpose {
  if (typeof value !== 'string' || value === '') {
    throw badRequest(`'${param}' is required: use "batch" (OpenAI) or "batch-api" (Together) for batch input files.`, param);
  }
  const purpose = ACCEPTED[value];
  if (!purpose || purpose === 'batch_output') {
    throw badRequest(
      `'${param}' "${value}" is not supported: use one of ${Object.keys(ACCEPTED)
        .filter((p) => p !== 'batch_output')
        .map((p) => `"${p}"`)
        .join(', ')}.`,
      param,
    );
  }
  return purpose;
}

/** Purposes to filter a listing by (a filter may name output files too). */
export function parsePurposeFilter(value: string): FilePurpose[] {
  const purpose = ACCEPTED[value];
  if (!purpose) throw badRequest(`'purpose' filter "${value}" is not a known purpose.`, 'purpose');
  return purpose === 'batch' && value === 'batch-api' ? ['batch', 'batch_output'] : [purpose];
}

const FILE_TYPES = new Set(['jsonl', 'csv', 'parquet']);

export function parseFileType(value: unknown, fileName: string): string {
  const type = typeof value === 'string' && value !== '' ? value : (fileName.match(/\.([A-Za-z0-9]+)$/)?.[1]?.toLowerCase() ?? 'jsonl');
  if (!FILE_TYPES.has(type)) throw badRequest(`'file_type' "${type}" is not supported: use "jsonl", "csv" or "parquet".`, 'file_type');
  return type;
}
