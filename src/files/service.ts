// File lifecycle, independent of wire dialect: direct uploads, the two-step
// signed upload, retention, deletion and content reads.
import { basename } from 'node:path';
import type { Readable } from 'node:stream';
import { ApiError, badRequest, conflict, notFound } from '../errors.ts';
import { newFileId } from '../ids.ts';
import { BlobTooLargeError, type BlobStore, type BlobWriteResult } from '../store/blobs/types.ts';
import { blobKeyForUpload, type Store } from '../store/index.ts';
import {
  deleteAwaitingFile,
  deleteFileRow,
  findFile,
  findOpenBatchUsingFile,
  findProcessedFileBySha256,
  findUserFile,
  insertFile,
  listFiles,
  type ListFilesQuery,
  transitionFileStatus,
  updateFile,
} from '../store/sql/files.ts';
import type { FilePurpose, FileRow } from '../store/sql/schema.ts';
import { deleteFileAndItsResults } from '../store/sql/result-retention.ts';
import { checkUploadSignature, signUpload } from './signed-urls.ts';
import { reclaimAfterLargeStream } from '../runtime/reclaim-memory.ts';

// How long after its signed URL expires an upload that never completed is kept: a 100 MB PUT begun at the
// last moment has ended long before, even at modem speed.
const ABANDONED_UPLOAD_GRACE_MS = 24 * 3600_000;

// As long as file systems allow; names are shown, never used as paths.
const MAX_FILE_NAME_LENGTH = 255;

/**
 * The name a file is listed under: the last path segment of what the client sent (Together's TypeScript SDK
 * sends the path as typed), with control characters (from JSON or form escapes) as "_" and lone surrogates as
 * U+FFFD, at most 255 characters. A name is for people to recognise the file, so it is tidied, never refused.
 */
export function storedFileName(name: string): string {
  const last = basename(name.replaceAll('\\', '/'));
  const tidy = (last.replace(/[\u0000-\u001f\u007f]/g, '_') as string & { toWellFormed(): string }).toWellFormed();
  return [...tidy].slice(0, MAX_FILE_NAME_LENGTH).join('') || 'upload.jsonl';
}

export interface FileServiceOptions {
  maxFileBytes: number;
  signedUrlTtlSeconds: number;
  signingSecret: string;
}

export interface PendingUpload {
  file: FileRow;
  /** Path and query of the signed PUT URL; api/ prefixes the public origin. */
  uploadPath: string;
}

export class FileService {
  constructor(
    private readonly store: Store,
    private readonly options: FileServiceOptions,
  ) {}

  get maxFileBytes(): number {
    return this.options.maxFileBytes;
  }

  private get db() {
    return this.store.sql.db;
  }

  private get blobs(): BlobStore {
    return this.store.blobs;
  }

  /** Streams bytes into a fresh blob for a file id not yet registered; the caller registers or discards it. */
  async receiveBytes(source: AsyncIterable<Uint8Array>): Promise<{ fileId: string; blobKey: string; result: BlobWriteResult }> {
    const fileId = newFileId();
    const blobKey = blobKeyForUpload(fileId);
    const result = await this.blobs.write(blobKey, source, { maxBytes: this.options.maxFileBytes });
    reclaimAfterLargeStream(result.bytes);
    return { fileId, blobKey, result };
  }

  async discardBytes(blobKey: string): Promise<void> {
    await this.blobs.delete(blobKey);
  }

  /** Registers bytes already received (the multipart upload shapes). */
  async registerReceived(
    userId: string,
    received: { fileId: string; blobKey: string; result: BlobWriteResult },
    meta: { filename: string; purpose: FilePurpose; fileType: string },
  ): Promise<FileRow> {
    const row: FileRow = {
      id: received.fileId,
      user_id: userId,
      filename: storedFileName(meta.filename),
      purpose: meta.purpose,
      file_type: meta.fileType,
      status: 'processed',
      bytes: received.result.bytes,
      line_count: received.result.lineCount,
      sha256: received.result.sha256,
      declared_sha256: null,
      blob_key: received.blobKey,
      batch_id: null,
      created_at: Date.now(),
      expires_at: null,
    };
    await insertFile(this.db, row);
    return row;
  }

  /** First step of the Together flow: a file row awaiting its bytes, and a signed URL to PUT them to. */
  async createPendingUpload(
    userId: string,
    meta: { filename: string; purpose: FilePurpose; fileType: string; checksum?: string },
  ): Promise<PendingUpload> {
    if (meta.checksum !== undefined) {
      if (!/^[0-9a-fA-F]{64}$/.test(meta.checksum)) throw badRequest("'checksum' must be the sha256 of the file, in hex.", 'checksum');
      const existing = await findProcessedFileBySha256(this.db, userId, meta.checksum.toLowerCase(), meta.purpose);
      if (existing) {
        throw new ApiError(409, `An identical file was already uploaded as ${existing.id}.`, {
          code: 'duplicate_file',
          headers: { 'x-should-retry': 'false' },
          extra: { file_id: existing.id },
        });
      }
    }
    const now = Date.now();
    const row: FileRow = {
      id: newFileId(),
      user_id: userId,
      filename: storedFileName(meta.filename),
      purpose: meta.purpose,
      file_type: meta.fileType,
      status: 'awaiting_upload',
      bytes: 0,
      line_count: 0,
      sha256: null,
      declared_sha256: meta.checksum?.toLowerCase() ?? null,
      blob_key: null,
      batch_id: null,
      created_at: now,
      // An upload never completed goes away on its own: a URL nobody used, or a PUT cut off by a crash (which
      // leaves the file 'uploading' and its URL spent). The retention sweep removes it once its URL has expired
      // and a PUT begun just before that would long have ended; completing the upload clears the expiry.
      expires_at: now + this.options.signedUrlTtlSeconds * 1000 + ABANDONED_UPLOAD_GRACE_MS,
    };
    await insertFile(this.db, row);
    const expires = Math.floor(now / 1000) + this.options.signedUrlTtlSeconds;
    const signature = signUpload(this.options.signingSecret, row.id, expires);
    return { file: row, uploadPath: `/uploads/${encodeURIComponent(row.id)}?expires=${expires}&signature=${signature}` };
  }

  /** Second step of the Together flow: the PUT of the bytes to a signed URL. Works once. */
  async completeSignedUpload(
    fileId: string,
    params: { expires?: string; signature?: string },
    declaredLength: number | undefined,
    body: AsyncIterable<Uint8Array>,
  ): Promise<FileRow> {
    const check = checkUploadSignature(this.options.signingSecret, fileId, { expires: Number(params.expires), signature: params.signature }, Date.now());
    if (check === 'invalid') throw new ApiError(403, 'The upload URL signature is not valid.', { code: 'invalid_signature', type: 'permission_error' });
    if (check === 'expired') {
      throw new ApiError(403, 'The upload URL has expired: request a new one by creating the file again.', {
        code: 'upload_url_expired',
        type: 'permission_error',
      });
    }
    if (declaredLength !== undefined && declaredLength > this.options.maxFileBytes) {
      // Same outcome as a body that runs over the limit: the pending file goes, so nothing half-made is listed.
      await deleteAwaitingFile(this.db, fileId);
      throw new BlobTooLargeError(this.options.maxFileBytes);
    }
    const claimed = await transitionFileStatus(this.db, fileId, 'awaiting_upload', { status: 'uploading' });
    if (!claimed) {
      const file = await findFile(this.db, fileId);
      if (!file) throw notFound('file', fileId);
      throw conflict('This upload URL has already been used.', 'upload_url_used');
    }
    const blobKey = blobKeyForUpload(fileId);
    let result: BlobWriteResult;
    try {
      result = await this.blobs.write(blobKey, body, { maxBytes: this.options.maxFileBytes });
      reclaimAfterLargeStream(result.bytes);
    } catch (err) {
      if (err instanceof BlobTooLargeError) await deleteFileRow(this.db, fileId);
      else await updateFile(this.db, fileId, { status: 'awaiting_upload' });
      throw err;
    }
    const file = await findFile(this.db, fileId);
    if (!file) throw notFound('file', fileId);
    if (file.declared_sha256 && file.declared_sha256 !== result.sha256) {
      await this.blobs.delete(blobKey);
      await updateFile(this.db, fileId, { status: 'awaiting_upload' });
      throw badRequest(`The uploaded bytes have sha256 ${result.sha256}, not the declared checksum ${file.declared_sha256}.`, 'checksum', 'checksum_mismatch');
    }
    const done = { status: 'processed' as const, bytes: result.bytes, sha256: result.sha256, line_count: result.lineCount, blob_key: blobKey, expires_at: null };
    await updateFile(this.db, fileId, done);
    return { ...file, ...done };
  }

  async get(userId: string, fileId: string): Promise<FileRow> {
    const file = await findUserFile(this.db, userId, fileId);
    if (!file || (file.expires_at !== null && file.expires_at <= Date.now())) throw notFound('file', fileId);
    return file;
  }

  /** Preprocess is a no-op beyond confirming the bytes arrived: measuring happened during the PUT. */
  async preprocess(userId: string, fileId: string): Promise<FileRow> {
    const file = await this.get(userId, fileId);
    if (file.status !== 'processed') {
      throw badRequest(`File ${fileId} has no content yet: PUT its bytes to the upload URL first.`, 'file_id', 'file_not_uploaded');
    }
    return file;
  }

  async delete(userId: string, fileId: string): Promise<void> {
    const file = await this.get(userId, fileId);
    const batchId = await findOpenBatchUsingFile(this.db, fileId);
    if (batchId) throw conflict(`File ${fileId} is the input of batch ${batchId}, which is still running. Cancel the batch first.`, 'file_in_use');
    await deleteFileAndItsResults(this.db, file, this.blobs);
    if (file.blob_key) await this.blobs.delete(file.blob_key);
  }

  /** Newest first unless asked otherwise; fetches one extra row so the caller can tell has_more. */
  async list(query: Omit<ListFilesQuery, 'now'>): Promise<FileRow[]> {
    return listFiles(this.db, { ...query, now: Date.now() });
  }

  /** Content of a processed file, bytes [start, end). */
  async openContent(userId: string, fileId: string, start: number, end?: number): Promise<{ file: FileRow; stream: Readable }> {
    const file = await this.get(userId, fileId);
    if (file.status !== 'processed' || !file.blob_key) {
      throw badRequest(`File ${fileId} has no content yet: its upload has not completed.`, 'file_id', 'file_not_uploaded');
    }
    return { file, stream: await this.blobs.read(file.blob_key, { start, end }) };
  }
}
