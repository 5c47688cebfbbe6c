// The list of the user's batches with live progress. Rows are updated in
// place on every poll (not rebuilt), so keyboard focus on a row's link
// survives the refreshes; status changes are announced once each.
import { api } from './api.js';
import { announce, byId, h, replaceChildren } from './dom.js';
import { formatCount, formatDuration, formatPercent, formatRate, formatTime, isTerminal, progressOf, statusLabel } from './format.js';
import { Poller } from './poller.js';
import { throughputOf } from './rates.js';

const RUNNING_POLL_MS = 1500;
// Nothing running here: still look now and then for batches made elsewhere (CLI, SDKs).
const IDLE_POLL_MS = 10_000;

/** A status badge: text, with colour only as a second cue. */
export function statusBadge(status) {
  return h('span', { class: `status status-${status}`, text: statusLabel(status) });
}

/** Fills (or updates) a <progress> and its text for `batch`. */
export function setProgress(bar, text, batch) {
  const { done, total, fraction } = progressOf(batch);
  if (fraction === null) {
    // No value attribute: the bar is indeterminate (validating, total not known yet).
    bar.removeAttribute('value');
    text.textContent = batch.status === 'validating' ? 'validating' : '—';
    return;
  }
  bar.max = Math.max(total, 1);
  bar.value = batch.status === 'completed' && total === 0 ? 1 : done;
  text.textContent = formatPercent(fraction);
}

export function createBatchesView({ tracker }) {
  const body = byId('batches-body');
  const rows = new Map();
  const statuses = new Map();
  let order = [];
  let olderPages = [];
  let lastId = null;
  let hasMore = false;

  const poller = new Poller(refresh);
  byId('batches-refresh').addEventListener('click', () => poller.start());
  byId('batches-more').addEventListener('click', loadOlder);

  function rowFor(batch) {
    let row = rows.get(batch.id);
    if (row) return row;
    const bar = h('progress', { max: 1, 'aria-label': `Progress of batch ${batch.id}` });
    const percent = h('span', { class: 'progress-text' });
    row = {
      tr: h('tr', { dataset: { batchId: batch.id } }),
      link: h('a', { href: `#/batches/${encodeURIComponent(batch.id)}`, class: 'mono', text: batch.id }),
      endpoint: h('span', { class: 'hint block' }),
      status: h('td'),
      bar,
      percent,
      counts: h('td', { class: 'num' }),
      rate: h('td', { class: 'num' }),
      eta: h('td', { class: 'num' }),
      created: h('td'),
    };
    row.tr.append(
      h('th', { scope: 'row' }, row.link, row.endpoint),
      row.status,
      h('td', { class: 'progress-cell' }, bar, percent),
      row.counts,
      row.rate,
      row.eta,
      row.created,
    );
    rows.set(batch.id, row);
    return row;
  }

  function update(batch) {
    const row = rowFor(batch);
    tracker.observe(batch);
    row.endpoint.textContent = [batch.endpoint, batch.model].filter(Boolean).join(' · ');
    if (row.status.dataset.status !== batch.status) {
      row.status.dataset.status = batch.status;
      replaceChildren(row.status, statusBadge(batch.status));
    }
    setProgress(row.bar, row.percent, batch);
    const { done, total } = progressOf(batch);
    const failed = batch.request_counts?.failed ?? 0;
    row.counts.textContent = `${formatCount(done)} / ${formatCount(total)}${failed > 0 ? ` (${formatCount(failed)} failed)` : ''}`;
    const { rate, eta, average } = throughputOf(tracker, batch);
    row.rate.textContent = rate === null ? '—' : `${formatRate(rate)}${average ? ' avg' : ''}`;
    row.eta.textContent = isTerminal(batch) ? '—' : eta === null ? '—' : formatDuration(eta);
    row.created.textContent = formatTime(batch.created_at);
    const previous = statuses.get(batch.id);
    if (previous !== undefined && previous !== batch.status) announce(`Batch ${batch.id} is ${statusLabel(batch.status).toLowerCase()}.`);
    statuses.set(batch.id, batch.status);
  }

  function place(batches) {
    const ids = batches.map((b) => b.id);
    // Re-append only when the order changed: moving a row that holds focus would drop it.
    if (ids.length === order.length && ids.every((id, i) => id === order[i])) return;
    order = ids;
    for (const [id, row] of rows) {
      if (ids.includes(id)) continue;
      row.tr.remove();
      rows.delete(id);
    }
    for (const id of ids) body.append(rows.get(id).tr);
  }

  async function refresh() {
    const error = byId('batches-error');
    try {
      const page = await api.listBatches();
      // Older pages were loaded once on request; the first page is the one that changes.
      const batches = [...page.data, ...olderPages.filter((b) => !page.data.some((p) => p.id === b.id))];
      for (const batch of batches) update(batch);
      place(batches);
      if (olderPages.length === 0) {
        lastId = page.last_id;
        hasMore = page.has_more;
      }
      byId('batches-more').hidden = !hasMore;
      byId('batches-empty').hidden = batches.length > 0;
      byId('batches-updated').textContent = `Updated ${new Date().toLocaleTimeString()}`;
      error.textContent = '';
      return batches.some((b) => !isTerminal(b)) ? RUNNING_POLL_MS : IDLE_POLL_MS;
    } catch (err) {
      error.textContent = `Could not load batches: ${err.message}`;
      throw err;
    }
  }

  async function loadOlder() {
    const button = byId('batches-more');
    button.disabled = true;
    try {
      const page = await api.listBatches(lastId);
      olderPages = [...olderPages, ...page.data];
      lastId = page.last_id;
      hasMore = page.has_more;
      for (const batch of page.data) update(batch);
      place([...order.map((id) => ({ id })), ...page.data.filter((b) => !order.includes(b.id))]);
      button.hidden = !hasMore;
    } catch (err) {
      byId('batches-error').textContent = `Could not load older batches: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  }

  return {
    show() {
      poller.start();
    },
    hide() {
      poller.stop();
    },
    reset() {
      poller.stop();
      body.replaceChildren();
      rows.clear();
      statuses.clear();
      order = [];
      olderPages = [];
      lastId = null;
      hasMore = false;
    },
  };
}
