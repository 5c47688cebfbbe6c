// Charts of the dashboard, drawn with Chart.js (served from node_modules as
// /dashboard/vendor/chart.umd.min.js; it defines the global `Chart`). Each
// chart is created once per canvas and updated in place on later polls, with
// animation off so a poll never makes the page move.

const COLORS = ['#2f6fde', '#d9534f', '#3a9d5d', '#e0a030', '#8a56c2', '#1aa3a3', '#c2562f', '#6b7a8f'];
export const SUCCEEDED = '#3a9d5d';
export const FAILED = '#d9534f';

export const chartsAvailable = () => typeof globalThis.Chart === 'function';

const textColor = () => getComputedStyle(document.body).color;

/**
 * Draws (or redraws) a chart on `canvas`. `spec`: { type, labels, datasets: [{label, data, color?}],
 * stacked?, horizontal?, yTitle?, xTitle? }.
 */
export function drawChart(canvas, spec) {
  const Chart = globalThis.Chart;
  const datasets = spec.datasets.map((set, i) => ({
    label: set.label,
    data: set.data,
    backgroundColor: set.color ?? COLORS[i % COLORS.length],
    borderColor: set.color ?? COLORS[i % COLORS.length],
    borderWidth: spec.type === 'line' ? 2 : 0,
    pointRadius: 0,
    fill: false,
    tension: 0.2,
  }));
  const existing = Chart.getChart(canvas);
  if (existing && existing.config.type === spec.type) {
    existing.data.labels = spec.labels;
    existing.data.datasets = datasets;
    existing.update('none');
    return existing;
  }
  existing?.destroy();
  const axis = (title, stacked) => ({
    stacked,
    ticks: { color: textColor(), maxRotation: 0, autoSkip: true },
    title: title ? { display: true, text: title, color: textColor() } : { display: false },
    grid: { color: 'rgba(128, 128, 128, 0.2)' },
  });
  return new Chart(canvas, {
    type: spec.type,
    data: { labels: spec.labels, datasets },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      indexAxis: spec.horizontal ? 'y' : 'x',
      plugins: { legend: { display: datasets.length > 1, labels: { color: textColor() } } },
      scales: { x: axis(spec.xTitle, Boolean(spec.stacked)), y: { ...axis(spec.yTitle, Boolean(spec.stacked)), beginAtZero: true } },
    },
  });
}
