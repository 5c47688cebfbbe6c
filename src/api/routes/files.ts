// /files: the four upload shapes from CONTRACT.md, plus retrieve, list,
// delete, content and preprocess. Bytes are streamed to the blob store;
// nothing here holds a whole file.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Multipart } from '@fastify/multipart';
import { badRequest } from '../../errors.ts';
import type { FileService } from '../../files/service.ts';
import { parseFileType, parsePurpose, parsePurposeFilter } from '../../files/purposes.ts';
import { presentFile } from '../presenters/index.ts';
import { asFields, optionalString, queryInteger, queryOrder, type Fields } from '../request-fields.ts';

export interface FilesRoutesOptions {
  files: FileService;
  /** Origin for signed upload URLs; derived from the request when unset. */
  publicUrl?: string;
}

const MAX_LIST = 10_000;

export async function filesRoutes(app: FastifyInstance, options: FilesRoutesOptions): Promise<void> {
  const { files } = options;

  app.post('/files', async (request, reply) => {
    if (request.isMultipart()) {
      const upload = await readMultipartUpload(request, files);
      if (upload.received) return sendReceived(request, reply, upload, options);
      // The signed-upload flow is Together's; an OpenAI client would follow the 302 as a GET.
      if (request.dialect === 'openai') throw missingFilePart();
      return startSignedUpload(request, reply, upload.fields, options);
    }
    if (request.dialect === 'openai') throw missingFilePart();
    // Together's form-urlencoded shapes put the fields in the body, the query, or both.
    return startSignedUpload(request, reply, { ...asFields(request.query), ...asFields(request.body) }, options);
  });

  app.post('/files/upload', async (request, reply) => {
    if (!request.isMultipart()) throw badRequest('Send multipart/form-data with the fields "purpose", "file_name" and "file".', 'file');
    const upload = await readMultipartUpload(request, files);
    if (!upload.received) throw badRequest('The multipart body has no "file" part: attach the file bytes as "file".', 'file');
    return sendReceived(request, reply, upload, options);
  });

  app.get('/files', async (request) => {
    const query = asFields(request.query);
    const limit = queryInteger(query, 'limit', { min: 1, max: MAX_LIST, fallback: MAX_LIST });
    const purpose = optionalString(query, 'purpose');
    const rows = await files.list({
      userId: request.principal.userId,
      limit,
      after: optionalString(query, 'after'),
      order: queryOrder(query),
      purposes: purpose ? parsePurposeFilter(purpose) : undefined,
    });
    const page = rows.slice(0, limit);
    const data = page.map((row) => presentFile(request.dialect, row));
    if (request.dialect === 'together') return { object: 'list', data };
    return { object: 'list', data, has_more: rows.length > limit, first_id: page[0]?.id ?? null, last_id: page.at(-1)?.id ?? null };
  });

  app.get<{ Params: { id: string } }>('/files/:id', async (request) =>
    presentFile(request.dialect, await files.get(request.principal.userId, request.params.id)),
  );

  app.delete<{ Params: { id: string } }>('/files/:id', async (request) => {
    await files.delete(request.principal.userId, request.params.id);
    return { id: request.params.id, object: 'file', deleted: true };
  });

  app.post<{ Params: { id: string } }>('/files/:id/preprocess', async (request) =>
    presentFile(request.dialect, await files.preprocess(request.principal.userId, request.params.id)),
  );

  // Clients send Accept: application/binary; the answer is always raw bytes (no negotiation).
  app.get<{ Params: { id: string } }>('/files/:id/content', async (request, reply) => {
    const file = await files.get(request.principal.userId, request.params.id);
    const range = parseRange(request.headers.range, file.bytes);
    if (range === 'unsatisfiable') {
      return reply
        .status(416)
        .header('content-range', `bytes */${file.bytes}`)
        .type('application/json')
        .send(rangeError(file.bytes));
    }
    const start = range?.start ?? 0;
    const end = range?.end ?? file.bytes;
    const { stream } = await files.openContent(request.principal.userId, file.id, start, end);
    reply
      .type('application/octet-stream')
      .header('content-length', String(end - start))
      .header('accept-ranges', 'bytes')
      .header('content-disposition', `attachment; filename="${file.filename.replace(/["\\\r\n]/g, '_')}"`);
    if (range) reply.status(206).header('content-range', `bytes ${start}-${end - 1}/${file.bytes}`);
    return reply.send(stream);
  });
}

const missingFilePart = () =>
  badRequest('Send the file as multipart/form-data with the fields "purpose" and "file" (the file bytes).', 'file', 'missing_file');

interface MultipartUpload {
  fields: Fields;
  received?: Awaited<ReturnType<FileService['receiveBytes']>>;
  partFileName?: string;
}

/**
 * Walks the parts in arrival order: OpenAI may send `purpose` after the file,
 * so the bytes go to a fresh blob first and the fields are checked after.
 */
async function readMultipartUpload(request: FastifyRequest, files: FileService): Promise<MultipartUpload> {
  const upload: MultipartUpload = { fields: {} };
  try {
    for await (const part of request.parts({ limits: { fileSize: files.maxFileBytes + 1, files: 1, fields: 32, fieldSize: 64 * 1024 } })) {
      await takePart(part, upload, files);
    }
  } catch (err) {
    if (upload.received) await files.discardBytes(upload.received.blobKey);
    throw multipartError(err);
  }
  return upload;
}

// Busboy reports a body it cannot parse with plain Errors; those are the client's to fix, not a 500.
const BUSBOY_FORM_ERROR = /^(Multipart: |Malformed |Unexpected end of |Unsupported content type)/;

function multipartError(err: unknown): unknown {
  const code = (err as { code?: unknown })?.code;
  if (code === 'FST_FILES_LIMIT') {
    return badRequest('The multipart body has more than one file part: send exactly one, named "file".', 'file', 'too_many_files');
  }
  if (code === 'FST_PARTS_LIMIT' || code === 'FST_FIELDS_LIMIT') {
    return badRequest('The multipart body has too many parts: send only "purpose", "file_name", "file_type", "checksum" and "file".', null, 'too_many_parts');
  }
  if (code === 'ERR_STREAM_PREMATURE_CLOSE') {
    return badRequest('The multipart body ended before the "file" part was complete: send the whole body, ending with the closing boundary.', 'file', 'incomplete_upload');
  }
  if (code === 'FST_PROTO_VIOLATION') return badRequest(`The multipart body has a field name that is not allowed: ${(err as Error).message}.`);
  if (err instanceof Error && code === undefined && BUSBOY_FORM_ERROR.test(err.message)) {
    return badRequest(
      `The multipart/form-data body could not be read (${err.message}): send a well-formed body whose Content-Type names its boundary.`,
      null,
      'invalid_multipart',
    );
  }
  return err;
}

async function takePart(part: Multipart, upload: MultipartUpload, files: FileService): Promise<void> {
  if (part.type === 'field') {
    upload.fields[part.fieldname] = typeof part.value === 'string' ? part.value : String(part.value);
    return;
  }
  if (part.fieldname !== 'file') {
    part.file.resume();
    throw badRequest(`Unexpected file part "${part.fieldname}": send the file bytes as the part named "file".`, part.fieldname);
  }
  upload.partFileName = part.filename;
  upload.received = await files.receiveBytes(part.file);
}

async function sendReceived(request: FastifyRequest, reply: FastifyReply, upload: MultipartUpload, { files }: FilesRoutesOptions) {
  const received = upload.received!;
  try {
    const purpose = parsePurpose(upload.fields.purpose);
    const filename = optionalString(upload.fields, 'file_name') ?? upload.partFileName ?? 'upload.jsonl';
    const fileType = parseFileType(upload.fields.file_type, filename);
    const row = await files.registerReceived(request.principal.userId, received, { filename, purpose, fileType });
    return reply.status(200).send(presentFile(request.dialect, row));
  } catch (err) {
    await files.discardBytes(received.blobKey);
    throw err;
  }
}

async function startSignedUpload(request: FastifyRequest, reply: FastifyReply, fields: Fields, { files, publicUrl }: FilesRoutesOptions) {
  const filename = optionalString(fields, 'file_name');
  if (!filename) {
    throw badRequest(
      'Send the file as multipart/form-data with a "file" part, or send "purpose", "file_name" and "file_type" to get a signed upload URL.',
      'file_name',
    );
  }
  const purpose = parsePurpose(fields.purpose);
  const fileType = parseFileType(fields.file_type, filename);
  const checksum = optionalString(fields, 'checksum');
  const pending = await files.createPendingUpload(request.principal.userId, { filename, purpose, fileType, checksum });
  const origin = publicUrl?.replace(/\/+$/, '') ?? `${request.protocol}://${request.host}`;
  return reply
    .status(302)
    .header('location', `${origin}${pending.uploadPath}`)
    .header('x-together-file-id', pending.file.id)
    .send(presentFile(request.dialect, pending.file));
}

/** `bytes=N-` and `bytes=N-M`; anything else (multiple ranges, suffix ranges) is served whole, as RFC 9110 allows. */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | undefined {
  if (!header) return undefined;
  const match = /^bytes=(\d+)-(\d*)$/.exec(header.trim());
  if (!match) return undefined;
  const start = Number(match[1]);
  const last = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
  if (start >= size || last < start) return 'unsatisfiable';
  return { start, end: last + 1 };
}

function rangeError(size: number) {
  const message = `The requested range is outside the file (${size} bytes).`;
  return { message, error: { message, type: 'invalid_request_error', param: 'range', code: 'range_not_satisfiable' } };
}
