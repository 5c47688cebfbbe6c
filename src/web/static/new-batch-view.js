// Upload a JSONL file and create a batch from it, as the OpenAI SDK would:
// POST /files (multipart, purpose=batch), then POST /batches with the
// endpoint named by the first line's `url` and a 24 h completion window.
import { api, uploadBatchInput } from './api.js';
import { byId } from './dom.js';
import { formatBytes } from './format.js';

// Enough for any realistic first line; a longer one keeps the chosen endpoint.
const FIRST_LINE_BYTES = 1024 * 1024;

/** The `url` of the file's first line, or null when it has none (Together form) or cannot be read. */
export async function firstLineUrl(file) {
  const head = await file.slice(0, FIRST_LINE_BYTES).text();
  const newline = head.indexOf('\n');
  if (newline < 0 && file.size > FIRST_LINE_BYTES) return null;
  try {
    const line = JSON.parse(newline < 0 ? head : head.slice(0, newline));
    return typeof line?.url === 'string' ? line.url : null;
  } catch {
    // Not JSON: validation on the server reports it with its line number.
    return null;
  }
}

export function createNewBatchView({ navigate }) {
  const form = byId('new-form');
  const input = byId('new-file');
  const endpoint = byId('new-endpoint');
  const error = byId('new-error');
  const status = byId('new-status');
  const submit = byId('new-submit');
  const progress = byId('new-progress');
  const bar = byId('new-progress-bar');

  input.addEventListener('change', async () => {
    error.textContent = '';
    const file = input.files?.[0];
    if (!file) return;
    const url = await firstLineUrl(file);
    if (url && [...endpoint.options].some((o) => o.value === url)) {
      endpoint.value = url;
      status.textContent = `Endpoint ${url}, from the first line.`;
    } else if (url) {
      status.textContent = '';
      error.textContent = `The first line's url "${url}" is not an endpoint Spool runs batches for.`;
    } else {
      status.textContent = '';
    }
  });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    const file = input.files?.[0];
    if (!file) {
      error.textContent = 'Choose a JSONL file first.';
      input.focus();
      return;
    }
    submit.disabled = true;
    input.setAttribute('aria-invalid', 'false');
    progress.hidden = false;
    bar.value = 0;
    status.textContent = `Uploading ${file.name} (${formatBytes(file.size)})…`;
    let uploaded;
    try {
      uploaded = await uploadBatchInput(file, (loaded, total) => {
        bar.value = total > 0 ? loaded / total : 0;
      });
    } catch (err) {
      fail(`The upload failed: ${err.message}`);
      input.setAttribute('aria-invalid', 'true');
      return;
    }
    bar.removeAttribute('value');
    status.textContent = `Uploaded as ${uploaded.id}. Creating the batch…`;
    try {
      const batch = await api.createBatch(uploaded.id, endpoint.value);
      status.textContent = `Created batch ${batch.id}.`;
      form.reset();
      progress.hidden = true;
      submit.disabled = false;
      navigate(`#/batches/${encodeURIComponent(batch.id)}`);
    } catch (err) {
      fail(`The file was uploaded as ${uploaded.id}, but the batch was not created: ${err.message}`);
    }
  });

  function fail(message) {
    error.textContent = message;
    status.textContent = '';
    progress.hidden = true;
    submit.disabled = false;
  }

  return {
    show() {},
    hide() {},
    reset() {
      form.reset();
      error.textContent = '';
      status.textContent = '';
      progress.hidden = true;
      submit.disabled = false;
    },
  };
}
