// PUT /uploads/:id: the second step of Together's upload flow. The URL carries
// its own credential (HMAC over file id + expiry), so this route sits outside
// the API-key scope. Any Content-Type is accepted and the body is handed to
// the blob store as a raw stream.
import type { FastifyInstance } from 'fastify';
import type { FileService } from '../../files/service.ts';
import { asFields, optionalString } from '../request-fields.ts';

export async function uploadRoutes(app: FastifyInstance, options: { files: FileService }): Promise<void> {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, payload, done) => done(null, payload));

  app.put<{ Params: { id: string } }>('/uploads/:id', async (request, reply) => {
    const query = asFields(request.query);
    const lengthHeader = request.headers['content-length'];
    const declaredLength = lengthHeader === undefined ? undefined : Number(lengthHeader);
    const body = (request.body as AsyncIterable<Uint8Array> | undefined) ?? emptyBody();
    const file = await options.files.completeSignedUpload(
      request.params.id,
      { expires: optionalString(query, 'expires'), signature: optionalString(query, 'signature') },
      declaredLength,
      body,
    );
    // The SDKs require exactly 200 here.
    return reply.status(200).send({ id: file.id, object: 'file', bytes: file.bytes, status: 'processed' });
  });
}

async function* emptyBody(): AsyncGenerator<Uint8Array> {}
