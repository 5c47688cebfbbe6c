// A real loopback HTTP server standing in for a user's webhook endpoint: it
// records every POST (path, headers, raw body) and answers what the test says,
// including not answering at all (connections reset), and verifies Standard
// Webhooks signatures independently of Spool's own signing code.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface ReceivedWebhook {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** The status answered, or 'reset' when the connection was cut instead. */
  answered: number | 'reset';
  at: number;
}

/** Decides the answer to one POST; `previous` is how many POSTs with the same webhook-id came before it. */
export type Answer = (request: { path: string; headers: IncomingHttpHeaders; previous: number }) => number | 'reset';

export interface WebhookReceiver {
  /** http://127.0.0.1:PORT (append any path). */
  url: string;
  received: ReceivedWebhook[];
  /** Replaces the answer policy (default: 200 to everything). */
  answer: Answer;
  close(): Promise<void>;
}

export async function startWebhookReceiver(answer: Answer = () => 200): Promise<WebhookReceiver> {
  const received: ReceivedWebhook[] = [];
  const sockets = new Set<Socket>();
  const receiver: WebhookReceiver = { url: '', received, answer, close: async () => undefined };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const path = (req.url ?? '/').split('?')[0];
      const id = req.headers['webhook-id'];
      const previous = received.filter((r) => r.headers['webhook-id'] === id && r.path === path).length;
      const answered = receiver.answer({ path, headers: req.headers, previous });
      received.push({ path, headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), answered, at: Date.now() });
      if (answered === 'reset') {
        req.socket.destroy();
        return;
      }
      res.writeHead(answered, { 'content-type': 'text/plain' }).end(answered < 300 ? 'ok' : 'not now');
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  receiver.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  let closing: Promise<void> | undefined;
  receiver.close = () =>
    (closing ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    }));
  return receiver;
}

/** Standard Webhooks verification, written from the spec: HMAC-SHA256 over `${id}.${timestamp}.${body}` with the whsec_ key. */
export function verifySignature(secret: string, headers: IncomingHttpHeaders, body: string): boolean {
  const id = String(headers['webhook-id']);
  const timestamp = String(headers['webhook-timestamp']);
  const key = secret.startsWith('whsec_') ? Buffer.from(secret.slice(6), 'base64') : Buffer.from(secret);
  const expected = createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest();
  return String(headers['webhook-signature'])
    .split(' ')
    .some((entry) => {
      if (!entry.startsWith('v1,')) return false;
      const given = Buffer.from(entry.slice(3), 'base64');
      return given.length === expected.length && timingSafeEqual(given, expected);
    });
}
