// Saving a file from the API. A plain <a href> cannot send the bearer key, so
// the bytes are fetched with it and handed to the browser as a Blob URL.
import { api } from './api.js';

export async function saveFile(fileId, filename) {
  saveBlob(await api.fileContent(fileId), filename || `${fileId}.jsonl`);
}

/** Hands `blob` to the browser as a download named `filename`. */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = filename;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  // The download reads the blob after click() returns; revoking it at once can cut it off.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/**
 * A button that downloads `fileId` on click, showing progress and failures in
 * `statusEl` (a role=status element) so the result is announced.
 */
export function downloadButton({ label, ariaLabel, fileId, filename, statusEl, className = 'secondary' }) {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = className;
  button.textContent = label;
  if (ariaLabel) button.setAttribute('aria-label', ariaLabel);
  button.addEventListener('click', async () => {
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    statusEl.textContent = `Downloading ${filename || fileId}…`;
    try {
      await saveFile(fileId, filename);
      statusEl.textContent = `Downloaded ${filename || fileId}.`;
    } catch (err) {
      statusEl.textContent = `Download failed: ${err.message}`;
    } finally {
      button.disabled = false;
      button.removeAttribute('aria-busy');
    }
  });
  return button;
}
