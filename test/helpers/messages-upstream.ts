// A real loopback HTTP server that speaks Anthropic's Messages API itself, as
// vLLM and the llama.cpp server do at /v1/messages: what Spool passes Messages
// requests through to when an upstream sets messagesApi. Its answers are made
// here, independently of Spool's translation, so a test can tell a passed-through
// answer from a translated one. Every other path is a 404.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface MessagesRequestRecord {
  path: string;
  headers: IncomingMessage['headers'];
  body: Record<string, any>;
}

export interface MessagesUpstream {
  /** Base URL ending in /v1. */
  url: string;
  /** Every POST /v1/messages, in arrival order. */
  received: MessagesRequestRecord[];
  /** Paths asked that are not /v1/messages (engine probes aside). */
  otherPaths: string[];
  close(): Promise<void>;
}

/** The text of the last user turn, the way this server "answers" it. */
function lastUserText(body: Record<string, any>): string {
  const last = [...(body.messages ?? [])].reverse().find((message: any) => message.role === 'user');
  if (!last) return '';
  if (typeof last.content === 'string') return last.content;
  return last.content
    .filter((block: any) => block.type === 'text')
    .map((block: any) => block.text)
    .join(' ');
}

export async function startMessagesUpstream(): Promise<MessagesUpstream> {
  const received: MessagesRequestRecord[] = [];
  const otherPaths: string[] = [];
  const sockets = new Set<Socket>();

  const send = (res: ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'request-id': `req_native_${received.length}` });
    res.end(text);
  };

  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'POST' || path !== '/v1/messages') {
      if (!['/props', '/slots', '/metrics', '/v1/models'].includes(path)) otherPaths.push(`${req.method} ${path}`);
      return send(res, 404, { type: 'error', error: { type: 'not_found_error', message: `No route ${req.method} ${path}` } });
    }
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    received.push({ path, headers: req.headers, body });
    const n = received.length;
    if (body.model === 'native-refuses') {
      return send(res, 400, { type: 'error', error: { type: 'invalid_request_error', message: 'native server refuses this request' } });
    }
    const text = `native answer to: ${lastUserText(body)}`;
    send(res, 200, {
      id: `msg_native_${n}`,
      type: 'message',
      role: 'assistant',
      model: body.model,
      content: [{ type: 'text', text }],
      stop_reason: 'end_turn',
      stop_sequence: null,
      usage: { input_tokens: 10 + n, output_tokens: text.split(' ').length },
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    received,
    otherPaths,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
