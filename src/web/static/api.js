// The page's only way to the server: the public JSON API (OpenAI dialect,
// /openai/v1) and /v1/admin/status, always with the signed-in key as a
// bearer token. Errors come back as ApiError carrying the API's own message.

const KEY_STORAGE = 'spool.apiKey';
const API = '/openai/v1';

/** The key lives in sessionStorage: it survives a reload, not the tab, and logout removes it. */
export const session = {
  get key() {
    return sessionStorage.getItem(KEY_STORAGE);
  },
  save(key) {
    sessionStorage.setItem(KEY_STORAGE, key);
  },
  clear() {
    sessionStorage.removeItem(KEY_STORAGE);
  },
};

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code ?? null;
  }
}

let unauthorizedHandler = () => {};

/** Called when a request made with the stored key answers 401 (the key was revoked meanwhile). */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

async function errorOf(response) {
  let message;
  let code;
  try {
    const body = await response.json();
    message = body?.error?.message ?? body?.message;
    code = body?.error?.code;
  } catch {
    // Not JSON (a proxy's page, a cut connection): the status line is all there is.
  }
  return new ApiError(response.status, message || `The server answered HTTP ${response.status}.`, code);
}

/**
 * One API call. `json` is sent as a JSON body; `as` picks what comes back:
 * 'json' (default), 'blob', 'text' or 'response' (the raw Response, for ranges).
 * `key` overrides the stored key (used to check a key before storing it).
 */
export async function request(path, { method = 'GET', json, body, headers, as = 'json', key = session.key, signal } = {}) {
  const allHeaders = new Headers(headers);
  allHeaders.set('authorization', `Bearer ${key ?? ''}`);
  let payload = body;
  if (json !== undefined) {
    allHeaders.set('content-type', 'application/json');
    payload = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, { method, headers: allHeaders, body: payload, signal, cache: 'no-store' });
  } catch (err) {
    if (err?.name === 'AbortError') throw err;
    throw new ApiError(0, 'The server could not be reached. Check that Spool is running, then try again.');
  }
  if (!response.ok && response.status !== 206) {
    const error = await errorOf(response);
    if (response.status === 401 && key === session.key) unauthorizedHandler(error);
    throw error;
  }
  if (as === 'response') return response;
  if (as === 'blob') return response.blob();
  if (as === 'text') return response.text();
  return response.json();
}

const enc = encodeURIComponent;

export const api = {
  /** Checks a key without storing it: any authenticated call does; 401 carries the API's message. */
  verifyKey: (key) => request(`${API}/batches?limit=1`, { key }),
  /** 200 for an admin key; 403 otherwise. */
  adminStatus: (options = {}) => request('/v1/admin/status', options),
  listBatches: (after) => request(`${API}/batches?limit=100${after ? `&after=${enc(after)}` : ''}`),
  getBatch: (id) => request(`${API}/batches/${enc(id)}`),
  /**
   * The first `bytes` bytes of a batch's results so far (a Spool extension), read from the stream and then
   * cut: the whole of it may be as large as the batch. `complete`: the batch has ended (it is the output file).
   */
  resultsHead: async (id, bytes) => {
    const response = await request(`${API}/batches/${enc(id)}/results`, { as: 'response' });
    const reader = response.body.getReader();
    const chunks = [];
    let size = 0;
    let truncated = false;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
      if (size >= bytes) {
        truncated = true;
        await reader.cancel();
        break;
      }
    }
    const text = new TextDecoder().decode(await new Blob(chunks).arrayBuffer());
    return { text, truncated, complete: response.headers.get('x-spool-results-complete') === 'true' };
  },
  /** The whole of a batch's results so far, as a Blob to save. */
  resultsSoFar: (id) => request(`${API}/batches/${enc(id)}/results`, { as: 'blob' }),
  /** Finished lines over time, latency distribution and errors by code (a Spool extension). */
  batchStats: (id) => request(`${API}/batches/${enc(id)}/stats`),
  /** Usage by day and model; `everyone` (admins): every user's, one row per user. */
  usage: ({ everyone = false } = {}) => request(`${API}/usage${everyone ? '?user_id=*&group_by=user' : ''}`),
  cancelBatch: (id) => request(`${API}/batches/${enc(id)}/cancel`, { method: 'POST' }),
  createBatch: (inputFileId, endpoint) =>
    request(`${API}/batches`, { method: 'POST', json: { input_file_id: inputFileId, endpoint, completion_window: '24h' } }),
  listFiles: (after) => request(`${API}/files?limit=100&order=desc${after ? `&after=${enc(after)}` : ''}`),
  getFile: (id) => request(`${API}/files/${enc(id)}`),
  deleteFile: (id) => request(`${API}/files/${enc(id)}`, { method: 'DELETE' }),
  fileContent: (id) => request(`${API}/files/${enc(id)}/content`, { as: 'blob' }),
  /** The first `bytes` bytes of a file, as text (a Range request: the file may be large). */
  fileHead: async (id, bytes) => {
    const response = await request(`${API}/files/${enc(id)}/content`, { as: 'response', headers: { range: `bytes=0-${bytes - 1}` } });
    const total = Number(response.headers.get('content-range')?.split('/')[1] ?? response.headers.get('content-length'));
    return { text: await response.text(), truncated: response.status === 206 && total > bytes };
  },
};

/**
 * Uploads `file` as a batch input (OpenAI multipart shape). XMLHttpRequest
 * rather than fetch because only it reports upload progress.
 */
export function uploadBatchInput(file, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append('purpose', 'batch');
    form.append('file', file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `${API}/files`);
    xhr.setRequestHeader('authorization', `Bearer ${session.key ?? ''}`);
    xhr.responseType = 'json';
    xhr.upload.addEventListener('progress', (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.addEventListener('load', () => {
      if (xhr.status === 200) return resolve(xhr.response);
      const message = xhr.response?.error?.message ?? xhr.response?.message ?? `The upload failed with HTTP ${xhr.status}.`;
      const error = new ApiError(xhr.status, message, xhr.response?.error?.code);
      if (xhr.status === 401) unauthorizedHandler(error);
      reject(error);
    });
    xhr.addEventListener('error', () => reject(new ApiError(0, 'The upload was cut off: the server could not be reached.')));
    xhr.addEventListener('abort', () => reject(new ApiError(0, 'The upload was cancelled.')));
    xhr.send(form);
  });
}
