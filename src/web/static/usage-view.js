// Usage: cost and tokens by day and model over the last 30 days, as charts
// and a table; admin keys may switch to every user's (one row per user).
import { api } from './api.js';
import { byId, h, replaceChildren } from './dom.js';
import { chartsAvailable, drawChart } from './charts.js';
import { formatCount } from './format.js';

export function createUsageView({ isAdmin }) {
  const everyone = byId('usage-everyone');
  everyone.addEventListener('change', () => void refresh());
  byId('usage-refresh').addEventListener('click', () => void refresh());

  async function refresh() {
    const all = isAdmin() && everyone.checked;
    let usage;
    try {
      usage = await api.usage({ everyone: all });
    } catch (err) {
      byId('usage-error').textContent = `Could not load usage: ${err.message}`;
      return;
    }
    byId('usage-error').textContent = '';
    render(usage, all);
  }

  function render(usage, all) {
    const rows = usage.data;
    const currency = rows[0]?.cost.currency ?? '';
    const totalCost = rows.reduce((sum, row) => sum + Math.round(row.cost.amount * 1e9), 0) / 1e9;
    const totalTokens = rows.reduce((sum, row) => sum + row.total_tokens, 0);
    byId('usage-summary').textContent = rows.length
      ? `${usage.start_date} to ${usage.end_date}: ${formatCount(rows.reduce((s, r) => s + r.requests, 0))} requests, ${formatCount(totalTokens)} tokens, ${formatCost(totalCost, currency)}${all ? ', every user' : ''}.`
      : `No usage recorded from ${usage.start_date} to ${usage.end_date}.`;
    byId('usage-user-head').hidden = !all;
    replaceChildren(
      byId('usage-body'),
      rows.map((row) =>
        h(
          'tr',
          {},
          h('td', { text: row.date }),
          all ? h('td', { text: row.user_id }) : null,
          h('td', { text: row.model }),
          h('td', { class: 'num', text: formatCount(row.requests) }),
          h('td', { class: 'num', text: formatCount(row.input_tokens) }),
          h('td', { class: 'num', text: formatCount(row.output_tokens) }),
          h('td', { class: 'num', text: formatCost(row.cost.amount, row.cost.currency) }),
        ),
      ),
    );
    if (!chartsAvailable()) return;
    // Days across, one stacked series per model (per user and model for every user).
    // Every day of the range, so quiet days show as such.
    const days = [];
    for (let t = Date.parse(usage.start_date); t <= Date.parse(usage.end_date); t += 86_400_000) days.push(new Date(t).toISOString().slice(0, 10));
    const seriesOf = (row) => (all ? `${row.user_id} · ${row.model}` : row.model);
    const series = [...new Set(rows.map(seriesOf))].sort();
    const sums = (pick) =>
      series.map((name) => ({
        label: name,
        data: days.map((day) => rows.filter((row) => row.date === day && seriesOf(row) === name).reduce((sum, row) => sum + pick(row), 0)),
      }));
    drawChart(byId('chart-cost'), { type: 'bar', stacked: true, labels: days, datasets: sums((row) => row.cost.amount), yTitle: currency });
    byId('chart-cost-text').textContent = `Total ${formatCost(totalCost, currency)} over ${days.length} day${days.length === 1 ? '' : 's'}.`;
    drawChart(byId('chart-tokens'), { type: 'bar', stacked: true, labels: days, datasets: sums((row) => row.total_tokens), yTitle: 'tokens' });
    byId('chart-tokens-text').textContent = `Total ${formatCount(totalTokens)} tokens.`;
  }

  return {
    show() {
      byId('usage-everyone-label').hidden = !isAdmin();
      void refresh();
    },
    hide() {},
    reset() {
      everyone.checked = false;
    },
  };
}

function formatCost(amount, currency) {
  return `${amount.toFixed(amount !== 0 && Math.abs(amount) < 1 ? 6 : 2)} ${currency}`;
}
