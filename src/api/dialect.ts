// Which wire dialect a request speaks. /openai/v1 is always OpenAI; /v1 is
// Together unless the User-Agent is one of OpenAI's SDKs (CONTRACT.md).
export type Dialect = 'together' | 'openai';

const OPENAI_USER_AGENT = /^(Async)?(Azure)?OpenAI\//;

export function detectDialect(url: string, userAgent: string | undefined): Dialect {
  if (url.startsWith('/openai/')) return 'openai';
  return userAgent && OPENAI_USER_AGENT.test(userAgent) ? 'openai' : 'together';
}
