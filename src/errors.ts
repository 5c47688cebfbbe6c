// The one error type that crosses layers. `api/` turns it into the envelope
// from CONTRACT.md; lower layers throw it with the status a client should see.

export interface ApiErrorOptions {
  type?: string;
  code?: string | null;
  param?: string | null;
  headers?: Record<string, string>;
  /** Extra top-level fields in the body (e.g. `file_id` on a dedupe 409). */
  extra?: Record<string, unknown>;
}

export class ApiError extends Error {
  override name = 'ApiError';
  readonly status: number;
  readonly type: string;
  readonly code: string | null;
  readonly param: string | null;
  readonly headers: Record<string, string>;
  readonly extra: Record<string, unknown>;

  constructor(status: number, message: string, options: ApiErrorOptions = {}) {
    super(message);
    this.status = status;
    this.type = options.type ?? defaultType(status);
    this.code = options.code ?? null;
    this.param = options.param ?? null;
    this.headers = options.headers ?? {};
    this.extra = options.extra ?? {};
  }
}

function defaultType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 404) return 'not_found_error';
  if (status === 409) return 'conflict_error';
  if (status === 413) return 'invalid_request_error';
  if (status === 429) return 'rate_limit_error';
  if (status >= 500) return 'server_error';
  return 'invalid_request_error';
}

export const badRequest = (message: string, param: string | null = null, code: string | null = 'invalid_request'): ApiError =>
  new ApiError(400, message, { param, code });

export const notFound = (what: string, id: string): ApiError =>
  new ApiError(404, `No ${what} found with id '${id}'.`, { code: 'not_found' });

export const conflict = (message: string, code: string): ApiError =>
  new ApiError(409, message, { code, headers: { 'x-should-retry': 'false' } });
