// The user's files: list (newest first, paged), download, delete.
import { api } from './api.js';
import { byId, h, replaceChildren } from './dom.js';
import { downloadButton } from './download.js';
import { formatBytes, formatTime } from './format.js';

const PURPOSES = { batch: 'Batch input', batch_output: 'Batch output' };

export function createFilesView() {
  let files = [];
  let lastId = null;
  let hasMore = false;

  byId('files-refresh').addEventListener('click', () => load());
  byId('files-more').addEventListener('click', () => load(lastId));

  async function load(after) {
    const error = byId('files-error');
    const more = byId('files-more');
    more.disabled = true;
    try {
      const page = await api.listFiles(after);
      files = after ? [...files, ...page.data] : page.data;
      lastId = page.last_id;
      hasMore = page.has_more;
      error.textContent = '';
      render();
    } catch (err) {
      error.textContent = `Could not load files: ${err.message}`;
    } finally {
      more.disabled = false;
    }
  }

  function render() {
    const status = byId('files-status');
    replaceChildren(
      byId('files-body'),
      files.map((file) =>
        h(
          'tr',
          { dataset: { fileId: file.id } },
          h('th', { scope: 'row', text: file.filename }),
          h('td', { class: 'mono', text: file.id }),
          h('td', { text: PURPOSES[file.purpose] ?? file.purpose }),
          h('td', { class: 'num', text: formatBytes(file.bytes) }),
          h('td', { text: formatTime(file.created_at) }),
          h(
            'td',
            {},
            h(
              'div',
              { class: 'row-actions' },
              file.status === 'processed'
                ? downloadButton({
                    label: 'Download',
                    // A column of identical "Download" buttons says nothing to a screen reader: name the file.
                    ariaLabel: `Download ${file.filename} (${file.id})`,
                    fileId: file.id,
                    filename: file.filename,
                    statusEl: status,
                  })
                : h('span', { class: 'hint', text: 'Upload not finished' }),
              h('button', {
                type: 'button',
                class: 'danger',
                text: 'Delete',
                'aria-label': `Delete ${file.filename} (${file.id})`,
                onclick: () => remove(file),
              }),
            ),
          ),
        ),
      ),
    );
    byId('files-empty').hidden = files.length > 0;
    byId('files-more').hidden = !hasMore;
  }

  async function remove(file) {
    if (!window.confirm(`Delete ${file.filename} (${file.id})? This cannot be undone.`)) return;
    const status = byId('files-status');
    try {
      await api.deleteFile(file.id);
      files = files.filter((f) => f.id !== file.id);
      render();
      status.textContent = `Deleted ${file.filename}.`;
      byId('files-title').focus();
    } catch (err) {
      status.textContent = `Could not delete ${file.filename}: ${err.message}`;
    }
  }

  return {
    show() {
      void load();
    },
    hide() {},
    reset() {
      files = [];
      lastId = null;
      hasMore = false;
      byId('files-body').replaceChildren();
    },
  };
}
