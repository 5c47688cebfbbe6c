// Loads the official together-ai SDK the way CONTRACT.md says users must:
// TOGETHER_API_BASE_URL set before the module loads (its upload ignores
// baseURL), loaded with require (it only works as CommonJS), and fetch given
// `duplex: 'half'` for stream bodies (its PUT omits it; stock Node rejects
// that). `restore()` puts fetch and the variable back.
import { createRequire } from 'node:module';

export type TogetherModule = typeof import('together-ai');

export interface LoadedTogetherSdk {
  Together: TogetherModule;
  restore(): void;
}

function isStreamBody(body: unknown): boolean {
  if (body === null || typeof body !== 'object') return false;
  return typeof (body as { pipe?: unknown }).pipe === 'function' || body instanceof ReadableStream || Symbol.asyncIterator in body;
}

export function loadTogetherSdk(togetherBaseUrl: string): LoadedTogetherSdk {
  const originalFetch = globalThis.fetch;
  const originalBaseUrl = process.env.TOGETHER_API_BASE_URL;
  process.env.TOGETHER_API_BASE_URL = togetherBaseUrl;
  globalThis.fetch = ((input: Parameters<typeof fetch>[0], init?: RequestInit) => {
    if (init && isStreamBody(init.body) && !('duplex' in init)) init = { ...init, duplex: 'half' } as RequestInit;
    return originalFetch(input, init);
  }) as typeof fetch;
  const Together = createRequire(import.meta.url)('together-ai') as TogetherModule;
  return {
    Together,
    restore() {
      globalThis.fetch = originalFetch;
      if (originalBaseUrl === undefined) delete process.env.TOGETHER_API_BASE_URL;
      else process.env.TOGETHER_API_BASE_URL = originalBaseUrl;
    },
  };
}
