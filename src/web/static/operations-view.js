// Admin keys only: each upstream's adaptive concurrency and queue, the
// database's queue by model, and how requests ended over the last minutes
// (GET /v1/admin/status).
import { api } from './api.js';
import { byId, h, replaceChildren } from './dom.js';
import { formatCount, formatDuration, formatPercent } from './format.js';
import { Poller } from './poller.js';

const POLL_MS = 2000;

const cell = (text, className = 'num') => h('td', { class: className, text });

function errorRateCell(recent) {
  const td = cell(formatPercent(recent.error_rate));
  // Colour is a second cue only; the number is there either way.
  if (recent.error_rate !== null && recent.error_rate >= 0.05) td.classList.add('bad');
  return td;
}

/** What the engine said about itself: its slots, running and waiting requests, KV-cache use; a dash when it says nothing. */
function engineText(engine) {
  if (!engine) return '—';
  const parts = [];
  if (engine.slots !== null) parts.push(`${formatCount(engine.slots)} slots`);
  if (engine.running !== null) parts.push(`${formatCount(engine.running)} running`);
  if (engine.waiting !== null) parts.push(`${formatCount(engine.waiting)} waiting`);
  if (engine.kv_cache_usage !== null) parts.push(`KV ${formatPercent(engine.kv_cache_usage)}`);
  return `${engine.kind}${parts.length ? `: ${parts.join(', ')}` : ''}`;
}

export function createOperationsView() {
  const poller = new Poller(refresh);

  async function refresh() {
    const error = byId('operations-error');
    let status;
    try {
      status = await api.adminStatus();
      error.textContent = '';
    } catch (err) {
      error.textContent = `Could not load the status: ${err.message}`;
      throw err;
    }
    render(status);
    return POLL_MS;
  }

  function render(status) {
    const w = status.worker;
    byId('operations-worker').textContent = w
      ? `This process's worker: ${formatCount(w.in_flight)} requests in flight, ${formatCount(w.queued)} queued; since start ${formatCount(w.succeeded)} succeeded, ${formatCount(w.failed)} failed, ${formatCount(w.retried)} retried.`
      : 'This process runs no worker (spool serve --no-worker): concurrency is shown by the processes that run batches; queue and outcomes below cover them all.';
    const now = status.generated_at * 1000;
    replaceChildren(
      byId('operations-upstreams'),
      status.upstreams.map((u) =>
        h(
          'tr',
          { dataset: { upstream: u.name } },
          h(
            'th',
            { scope: 'row' },
            u.name,
            u.kind === 'upstream' ? null : h('span', { class: 'hint', text: ` (${u.kind === 'echo' ? 'built-in emulator' : 'embedded engine'})` }),
            u.pool && u.pool !== u.name ? h('span', { class: 'hint', text: ` (replica of ${u.pool})` }) : null,
            u.affinity && u.affinity.hit_rate !== null ? h('span', { class: 'hint', text: ` · affinity ${Math.round(u.affinity.hit_rate * 100)}% home` }) : null,
          ),
          u.health && !u.health.up
            ? cell(`out${u.health.down_since ? ` for ${formatDuration(Math.max(0, now / 1000 - u.health.down_since))}` : ''}: ${u.health.reason ?? 'unreachable'}`, 'bad')
            : cell(
                u.concurrency_limit === null
                  ? 'idle'
                  : `${formatCount(u.in_flight)} / ${formatCount(u.concurrency_limit)}${u.paused_until ? ` · paused ${formatDuration((u.paused_until - now) / 1000)}` : ''}`,
              ),
          cell(u.max_concurrency === null ? '—' : formatCount(u.max_concurrency)),
          cell(u.limit_reason === null ? '—' : `${u.limit_reason}, ${formatDuration(Math.max(0, (now - u.limit_changed_at) / 1000))} ago`, ''),
          cell(engineText(u.engine), ''),
          cell(formatCount(u.queued)),
          cell(formatCount(u.pending)),
          cell(formatCount(u.running)),
          cell(formatCount(u.recent.succeeded)),
          cell(formatCount(u.recent.failed)),
          errorRateCell(u.recent),
          cell(formatCount(u.recent.retries)),
        ),
      ),
    );
    replaceChildren(
      byId('operations-models'),
      status.models.map((m) =>
        h(
          'tr',
          {},
          h('th', { scope: 'row', text: m.model }),
          cell(m.upstream ?? 'none: lines fail with invalid_model', m.upstream ? '' : 'bad'),
          cell(formatCount(m.pending)),
          cell(formatCount(m.running)),
          cell(formatCount(m.recent.succeeded)),
          cell(formatCount(m.recent.failed)),
          errorRateCell(m.recent),
        ),
      ),
    );
    if (status.models.length === 0) {
      byId('operations-models').append(h('tr', {}, h('td', { colspan: 7, class: 'hint', text: 'Nothing queued or finished recently.' })));
    }
    const minutes = Math.round(status.window_seconds / 60);
    byId('operations-note').textContent = `Succeeded, failed, error rate and retries count requests that finished in the last ${minutes} minutes. Pending and running (claimed by a worker: in flight or waiting there for a slot) cover every worker; in flight, limit and queued-here are this process's. Updated ${new Date().toLocaleTimeString()}.`;
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
      byId('operations-upstreams').replaceChildren();
      byId('operations-models').replaceChildren();
    },
  };
}
