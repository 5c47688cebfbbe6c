// Message Batch ids are the batch's own id in Anthropic's form ("msgbatch_"
// instead of "batch-"), so the same batch is one id away in every dialect and
// ids keep sorting by creation time.
const INTERNAL_PREFIX = 'batch-';
const MESSAGE_BATCH_PREFIX = 'msgbatch_';

export function messageBatchId(batchId: string): string {
  return batchId.startsWith(INTERNAL_PREFIX) ? MESSAGE_BATCH_PREFIX + batchId.slice(INTERNAL_PREFIX.length) : batchId;
}

/** The batch id behind a Message Batch id; any other id is returned as it is. */
export function internalBatchId(id: string): string {
  return id.startsWith(MESSAGE_BATCH_PREFIX) ? INTERNAL_PREFIX + id.slice(MESSAGE_BATCH_PREFIX.length) : id;
}
