// Gives any upstream client a /v1/messages endpoint. A server that speaks the
// Messages API itself ("native", per the upstream's messagesApi setting) gets
// the call as it is; any other (chat-completions servers, the echo emulator,
// the embedded engine) gets it translated to /v1/chat/completions, and its
// answer translated back. Only successful answers are translated: an error
// answer keeps its status and body, which the API layer words in Anthropic's
// envelope and the retry policy reads as for any other endpoint.
import type { UpstreamCall, UpstreamClient, UpstreamOutcome } from '../http-client.ts';
import { chatToMessage, messagesToChat, TranslationError } from './translate.ts';

export const MESSAGES_ENDPOINT = '/v1/messages';
const CHAT_ENDPOINT = '/v1/chat/completions';

export function answeringMessages(client: UpstreamClient, mode: 'native' | 'translate'): UpstreamClient {
  if (mode === 'native') return client;
  return {
    name: client.name,
    close: () => client.close(),
    async send(call: UpstreamCall): Promise<UpstreamOutcome> {
      if (call.endpoint !== MESSAGES_ENDPOINT) return client.send(call);
      let chatBody: Record<string, unknown>;
      try {
        chatBody = messagesToChat(call.body);
      } catch (err) {
        // Requests are checked before they get here; one that still cannot be said in chat completions fails as the client's.
        return invalidRequest(400, `This Messages request cannot be translated to chat completions: ${(err as Error).message}`);
      }
      const outcome = await client.send({ ...call, endpoint: CHAT_ENDPOINT, body: chatBody, bodyBytes: undefined });
      if (outcome.kind !== 'response' || outcome.status < 200 || outcome.status >= 300) return outcome;
      try {
        return { ...outcome, body: chatToMessage(outcome.body, call.body), bodyText: undefined };
      } catch (err) {
        if (!(err instanceof TranslationError)) throw err;
        return { kind: 'response', status: 502, body: apiError(`The upstream's answer cannot be read as a message: ${err.message}.`), requestId: outcome.requestId, retryAfterMs: null };
      }
    },
  };
}

function invalidRequest(status: number, message: string): UpstreamOutcome {
  return { kind: 'response', status, body: { type: 'error', error: { type: 'invalid_request_error', message } }, requestId: null, retryAfterMs: null };
}

function apiError(message: string) {
  return { type: 'error', error: { type: 'api_error', message } };
}
