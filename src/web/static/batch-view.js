// One batch: progress, counts, timestamps, validation errors, a preview of
// its error file, downloads of its files, and cancel while it runs.
import { api } from './api.js';
import { byId, h, replaceChildren } from './dom.js';
import { downloadButton, saveBlob } from './download.js';
import { formatBytes, formatCount, formatDuration, formatPercent, formatRate, formatTime, isTerminal, progressOf, statusLabel } from './format.js';
import { Poller } from './poller.js';
import { throughputOf } from './rates.js';
import { setProgress, statusBadge } from './batches-view.js';
import { chartsAvailable, drawChart, FAILED, SUCCEEDED } from './charts.js';

const POLL_MS = 1500;
// The error file may be as large as the batch: the preview reads only its head.
const PREVIEW_BYTES = 64 * 1024;
const PREVIEW_LINES = 20;
// The charts' data is aggregated over the whole batch on the server: fetched less often than the counts.
const STATS_EVERY_MS = 5000;

const TIMELINE = [
  ['created_at', 'Created'],
  ['in_progress_at', 'Started'],
  ['finalizing_at', 'Finalizing'],
  ['completed_at', 'Completed'],
  ['failed_at', 'Failed'],
  ['cancelling_at', 'Cancelling'],
  ['cancelled_at', 'Cancelled'],
  ['expired_at', 'Expired'],
  ['expires_at', 'Deadline'],
];

function field(list, term, value) {
  list.append(h('dt', { text: term }), h('dd', {}, value));
}

export function createBatchView({ tracker }) {
  let batchId = null;
  let lastDecile = null;
  let lastStatus = null;
  let previewedErrorFile = null;
  let renderedFiles = '';
  let statsAt = 0;
  let resultsAt = 0;
  let statsFinal = false;
  const fileInfo = new Map();
  const loadingFiles = new Set();
  const poller = new Poller(refresh);

  const bar = h('progress', { max: 1, id: 'batch-progress', 'aria-labelledby': 'batch-progress-label' });
  const percent = h('span', { class: 'progress-text' });
  const statusSlot = h('span');
  const counts = h('p', { class: 'counts' });
  const speed = h('p', { class: 'hint' });
  replaceChildren(
    byId('batch-summary'),
    h('p', { class: 'summary-status' }, statusSlot),
    h('div', { class: 'progress-row' }, h('span', { id: 'batch-progress-label', class: 'visually-hidden', text: 'Batch progress' }), bar, percent),
    counts,
    speed,
  );

  async function refresh() {
    const id = batchId;
    try {
      const batch = await api.getBatch(id);
      if (id !== batchId) return null;
      render(batch);
      byId('batch-error').textContent = '';
      void refreshCharts(batch);
      void refreshResultsSoFar(batch);
      return isTerminal(batch) ? null : POLL_MS;
    } catch (err) {
      if (id === batchId) byId('batch-error').textContent = `Could not load batch ${id}: ${err.message}`;
      if (err.status === 404) return null;
      throw err;
    }
  }

  function render(batch) {
    tracker.observe(batch);
    replaceChildren(statusSlot, statusBadge(batch.status));
    setProgress(bar, percent, batch);
    const { done, total, fraction } = progressOf(batch);
    const { completed, failed } = batch.request_counts;
    counts.textContent = `${formatCount(done)} of ${formatCount(total)} requests finished: ${formatCount(completed)} succeeded, ${formatCount(failed)} failed.`;
    const { rate, eta, average } = throughputOf(tracker, batch);
    speed.textContent = average
      ? `Average throughput ${formatRate(rate)}.`
      : `Throughput ${formatRate(rate)}${eta === null ? '' : `, about ${formatDuration(eta)} left`}.`;
    announceProgress(batch, fraction);
    renderFields(batch);
    renderTimeline(batch);
    renderActions(batch);
    renderValidationErrors(batch);
    if (batch.error_file_id && batch.error_file_id !== previewedErrorFile) {
      previewedErrorFile = batch.error_file_id;
      void previewErrorFile(batch.error_file_id);
    }
  }

  // While the batch runs, the head of its results so far (once it has ended, its output file has the download button).
  async function refreshResultsSoFar(batch) {
    const section = byId('batch-results');
    if (isTerminal(batch) || batch.status === 'validating') {
      section.hidden = true;
      return;
    }
    if (Date.now() - resultsAt < STATS_EVERY_MS) return;
    resultsAt = Date.now();
    const id = batch.id;
    let head;
    try {
      head = await api.resultsHead(id, PREVIEW_BYTES);
    } catch (err) {
      if (id === batchId) byId('batch-results-note').textContent = `Could not read the results so far: ${err.message}`;
      return;
    }
    if (id !== batchId) return;
    const lines = head.text.split('\n');
    if (head.truncated) lines.pop();
    const entries = lines.filter((line) => line.trim() !== '');
    section.hidden = false;
    const shown = entries.slice(0, PREVIEW_LINES);
    byId('batch-results-note').textContent =
      entries.length === 0
        ? 'No line has been recorded yet.'
        : `The first ${shown.length} lines recorded so far (in line order); the batch is still running.`;
    replaceChildren(byId('batch-results-body'), shown.map(resultLineRow));
  }

  byId('batch-results-save').addEventListener('click', async () => {
    const status = byId('batch-action-status');
    const id = batchId;
    try {
      saveBlob(await api.resultsSoFar(id), `${id}.results-so-far.jsonl`);
      status.textContent = `Downloaded the results so far of batch ${id}.`;
    } catch (err) {
      status.textContent = `Download failed: ${err.message}`;
    }
  });

  async function refreshCharts(batch) {
    const section = byId('batch-charts');
    if (!chartsAvailable() || batch.status === 'validating' || (batch.status === 'failed' && !batch.in_progress_at)) {
      section.hidden = true;
      return;
    }
    const terminal = isTerminal(batch);
    if (statsFinal || (!terminal && Date.now() - statsAt < STATS_EVERY_MS)) return;
    statsAt = Date.now();
    const id = batch.id;
    let stats;
    try {
      stats = await api.batchStats(id);
    } catch (err) {
      if (id === batchId) byId('batch-charts-note').textContent = `Could not load the charts: ${err.message}`;
      return;
    }
    if (id !== batchId) return;
    statsFinal = terminal;
    section.hidden = false;
    renderCharts(stats);
  }

  function renderCharts(stats) {
    const total = stats.finished.reduce((sum, b) => sum + b.succeeded + b.failed, 0);
    byId('batch-charts-note').textContent =
      total === 0 ? 'No line has finished yet.' : `In ${stats.bucket_seconds}-second steps from the start of the run.`;
    // Every bucket from the first to the last, so quiet stretches show as such.
    const last = stats.finished.length ? stats.finished[stats.finished.length - 1].offset_seconds : 0;
    const steps = Math.round(last / stats.bucket_seconds) + 1;
    const byOffset = new Map(stats.finished.map((b) => [Math.round(b.offset_seconds / stats.bucket_seconds), b]));
    const labels = [];
    const succeeded = [];
    const failed = [];
    const rate = [];
    let sumOk = 0;
    let sumFailed = 0;
    for (let i = 0; i < steps; i++) {
      const b = byOffset.get(i) ?? { succeeded: 0, failed: 0 };
      sumOk += b.succeeded;
      sumFailed += b.failed;
      labels.push(formatDuration((i + 1) * stats.bucket_seconds));
      succeeded.push(sumOk);
      failed.push(sumFailed);
      rate.push((b.succeeded + b.failed) / stats.bucket_seconds);
    }
    // Cumulative, from nothing at the start: a line from 0, visible even while there is one step.
    drawChart(byId('chart-finished'), {
      type: 'line',
      labels: ['0s', ...labels],
      datasets: [
        { label: 'succeeded', data: [0, ...succeeded], color: SUCCEEDED },
        { label: 'failed', data: [0, ...failed], color: FAILED },
      ],
      xTitle: 'since start',
    });
    byId('chart-finished-text').textContent = `${formatCount(sumOk)} lines succeeded and ${formatCount(sumFailed)} failed so far.`;
    drawChart(byId('chart-throughput'), { type: 'bar', labels, datasets: [{ label: 'lines/s', data: rate }], xTitle: 'since start' });
    const peak = rate.length ? Math.max(...rate) : 0;
    byId('chart-throughput-text').textContent = `Peak ${formatRate(peak)}.`;
    const bounds = stats.latency_ms.bounds;
    const latencyLabels = stats.latency_ms.counts.map((_, i) => (i < bounds.length ? `≤ ${latencyLabel(bounds[i])}` : `> ${latencyLabel(bounds[bounds.length - 1])}`));
    drawChart(byId('chart-latency'), { type: 'bar', labels: latencyLabels, datasets: [{ label: 'lines', data: stats.latency_ms.counts }], yTitle: 'lines' });
    byId('chart-latency-text').textContent = latencyLabels.map((label, i) => `${label}: ${stats.latency_ms.counts[i]}`).join(', ');
    const errors = stats.errors.length ? stats.errors : [{ code: 'none', count: 0 }];
    drawChart(byId('chart-errors'), {
      type: 'bar',
      horizontal: true,
      labels: errors.map((e) => e.code),
      datasets: [{ label: 'lines', data: errors.map((e) => e.count), color: FAILED }],
    });
    byId('chart-errors-text').textContent = stats.errors.length ? stats.errors.map((e) => `${e.code}: ${e.count}`).join(', ') : 'No errors.';
  }

  // The live region speaks at each tenth and at status changes, not on every poll.
  function announceProgress(batch, fraction) {
    const decile = fraction === null ? null : Math.floor(fraction * 10);
    if (decile === lastDecile && batch.status === lastStatus) return;
    lastDecile = decile;
    lastStatus = batch.status;
    byId('batch-live').textContent = `${statusLabel(batch.status)}${fraction === null ? '' : `, ${formatPercent(fraction)} done`}.`;
  }

  function renderFields(batch) {
    const list = byId('batch-fields');
    list.replaceChildren();
    field(list, 'Endpoint', h('code', { text: batch.endpoint }));
    if (batch.model) field(list, 'Model', batch.model);
    field(list, 'Input file', h('span', { class: 'mono', text: batch.input_file_id }));
    field(list, 'Output file', batch.output_file_id ? h('span', { class: 'mono', text: batch.output_file_id }) : '—');
    field(list, 'Error file', batch.error_file_id ? h('span', { class: 'mono', text: batch.error_file_id }) : '—');
    field(list, 'Completion window', batch.completion_window);
    const usage = batch.usage;
    if (usage) field(list, 'Tokens', `${formatCount(usage.input_tokens)} in, ${formatCount(usage.output_tokens)} out`);
  }

  function renderTimeline(batch) {
    const list = byId('batch-times');
    list.replaceChildren();
    for (const [key, label] of TIMELINE) {
      if (batch[key] !== null && batch[key] !== undefined) field(list, label, h('time', { datetime: new Date(batch[key] * 1000).toISOString(), text: formatTime(batch[key]) }));
    }
  }

  function renderActions(batch) {
    // Rebuilt only when the set of files or the status changes, so a button keeps focus across polls.
    const key = [batch.status, batch.input_file_id, batch.output_file_id, batch.error_file_id, ...[...fileInfo.keys()]].join('|');
    if (key === renderedFiles) return;
    renderedFiles = key;
    const status = byId('batch-action-status');
    const actions = byId('batch-actions');
    actions.replaceChildren();
    const files = [
      [batch.output_file_id, 'output'],
      [batch.error_file_id, 'error'],
      [batch.input_file_id, 'input'],
    ];
    for (const [fileId, kind] of files) {
      if (!fileId) continue;
      const info = fileInfo.get(fileId);
      if (info === undefined) {
        void loadFileInfo(fileId, batch);
        continue;
      }
      if (info === null) continue; // deleted: nothing to download
      actions.append(
        downloadButton({
          label: `Download ${kind} file (${formatBytes(info.bytes)})`,
          fileId,
          filename: info.filename,
          statusEl: status,
          className: kind === 'output' ? 'primary' : 'secondary',
        }),
      );
    }
    if (!isTerminal(batch) && batch.status !== 'cancelling') {
      actions.append(h('button', { type: 'button', class: 'danger', text: 'Cancel batch', onclick: () => cancel(batch.id) }));
    }
  }

  async function loadFileInfo(fileId, batch) {
    if (loadingFiles.has(fileId)) return;
    loadingFiles.add(fileId);
    try {
      fileInfo.set(fileId, await api.getFile(fileId));
    } catch {
      fileInfo.set(fileId, null);
    } finally {
      loadingFiles.delete(fileId);
    }
    if (batch.id === batchId) renderActions(batch);
  }

  async function cancel(id) {
    if (!window.confirm(`Cancel batch ${id}? Requests already finished are kept in its output file.`)) return;
    const status = byId('batch-action-status');
    try {
      const batch = await api.cancelBatch(id);
      status.textContent = `Batch ${id} is ${statusLabel(batch.status).toLowerCase()}.`;
      if (id === batchId) {
        render(batch);
        poller.start();
      }
    } catch (err) {
      status.textContent = `Could not cancel: ${err.message}`;
    }
  }

  function renderValidationErrors(batch) {
    const errors = batch.errors?.data ?? [];
    byId('batch-validation').hidden = errors.length === 0;
    replaceChildren(
      byId('batch-validation-body'),
      errors.map((e) =>
        h('tr', {}, h('td', { class: 'num', text: e.line ?? '—' }), h('td', {}, h('code', { text: e.code })), h('td', { text: e.param ?? '—' }), h('td', { text: e.message })),
      ),
    );
  }

  async function previewErrorFile(fileId) {
    const section = byId('batch-error-file');
    const note = byId('batch-error-file-note');
    let head;
    try {
      head = await api.fileHead(fileId, PREVIEW_BYTES);
    } catch (err) {
      section.hidden = false;
      note.textContent = `Could not read the error file: ${err.message}`;
      return;
    }
    const lines = head.text.split('\n');
    // A head cut mid-line ends in a partial line: drop it.
    if (head.truncated) lines.pop();
    const entries = lines.filter((line) => line.trim() !== '');
    section.hidden = entries.length === 0;
    const shown = entries.slice(0, PREVIEW_LINES);
    note.textContent =
      shown.length < entries.length || head.truncated
        ? `The first ${shown.length} lines. Download the error file for all of them.`
        : `${shown.length} line${shown.length === 1 ? '' : 's'}.`;
    replaceChildren(byId('batch-error-file-body'), shown.map(errorLineRow));
  }

  return {
    show({ id }) {
      if (id !== batchId) {
        batchId = id;
        lastDecile = null;
        lastStatus = null;
        previewedErrorFile = null;
        renderedFiles = '';
        byId('batch-title').textContent = `Batch ${id}`;
        for (const el of ['batch-fields', 'batch-times', 'batch-actions', 'batch-validation-body', 'batch-error-file-body']) byId(el).replaceChildren();
        for (const el of ['batch-error', 'batch-action-status', 'batch-live']) byId(el).textContent = '';
        byId('batch-validation').hidden = true;
        byId('batch-error-file').hidden = true;
        byId('batch-charts').hidden = true;
        byId('batch-results').hidden = true;
        byId('batch-results-body').replaceChildren();
        resultsAt = 0;
        byId('batch-charts-note').textContent = '';
        statsAt = 0;
        statsFinal = false;
        statusSlot.replaceChildren();
        counts.textContent = 'Loading…';
        speed.textContent = '';
        bar.removeAttribute('value');
        percent.textContent = '';
      }
      poller.start();
    },
    hide() {
      poller.stop();
    },
    reset() {
      poller.stop();
      batchId = null;
      fileInfo.clear();
    },
  };
}

function resultLineRow(text) {
  let line;
  try {
    line = JSON.parse(text);
  } catch {
    return h('tr', {}, h('td', { colspan: 3, text }));
  }
  const body = line.response?.body;
  const message = body?.choices?.[0]?.message?.content ?? body?.choices?.[0]?.text ?? JSON.stringify(body ?? null);
  return h(
    'tr',
    { dataset: { customId: String(line.custom_id) } },
    h('td', {}, h('code', { text: String(line.custom_id) })),
    h('td', { class: 'num', text: line.response?.status_code ?? '—' }),
    h('td', { class: 'truncate', text: String(message).slice(0, 200) }),
  );
}

function errorLineRow(text) {
  let line;
  try {
    line = JSON.parse(text);
  } catch {
    return h('tr', {}, h('td', { colspan: 4, text }));
  }
  const error = line.error ?? {};
  return h(
    'tr',
    {},
    h('td', { class: 'mono', text: line.custom_id ?? '—' }),
    h('td', {}, h('code', { text: error.code ?? '—' })),
    h('td', { class: 'num', text: line.response?.status_code ?? '—' }),
    h('td', { text: error.message ?? '' }),
  );
}

function latencyLabel(ms) {
  return ms >= 1000 ? `${ms / 1000} s` : `${ms} ms`;
}
