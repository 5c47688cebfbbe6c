// How numbers, sizes, times and statuses read on the page.

const STATUS_LABELS = {
  validating: 'Validating',
  failed: 'Failed',
  in_progress: 'In progress',
  finalizing: 'Finalizing',
  completed: 'Completed',
  expired: 'Expired',
  cancelling: 'Cancelling',
  cancelled: 'Cancelled',
};

export const TERMINAL_STATUSES = new Set(['failed', 'completed', 'expired', 'cancelled']);

export const isTerminal = (batch) => TERMINAL_STATUSES.has(batch.status);

export const statusLabel = (status) => STATUS_LABELS[status] ?? status;

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

export const formatCount = (n) => integer.format(n);

export function formatBytes(bytes) {
  if (bytes < 1024) return `${integer.format(bytes)} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${decimal.format(value)} ${units[unit]}`;
}

/** Unix seconds as local date and time, or an em dash. */
export function formatTime(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  const d = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '—';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const hours = Math.floor(m / 60);
  return `${hours}h ${String(m % 60).padStart(2, '0')}m`;
}

export function formatRate(perSecond) {
  if (perSecond === null || !Number.isFinite(perSecond)) return '—';
  return `${perSecond >= 100 ? integer.format(perSecond) : decimal.format(perSecond)} req/s`;
}

export function formatPercent(fraction) {
  if (fraction === null || !Number.isFinite(fraction)) return '—';
  return `${decimal.format(fraction * 100)}%`;
}

/** Requests with a final outcome, and the fraction of the batch they are (null while the total is unknown). */
export function progressOf(batch) {
  const { total, completed, failed } = batch.request_counts ?? { total: 0, completed: 0, failed: 0 };
  const done = completed + failed;
  if (batch.status === 'completed') return { done, total, fraction: 1 };
  return { done, total, fraction: total > 0 ? done / total : null };
}
