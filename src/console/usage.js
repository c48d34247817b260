// Usage over time: a project's or one key's spend per UTC day over the last
// 30 days, from GET /v1/admin/usage: an SVG bar chart of the cost, a table
// of the days with traffic, and the same as a CSV file (a Blob URL, the
// columns `keyward usage --format csv` prints). Without a monitor Redis
// user the server answers 409, and its message says what to do.

import { api, ApiError } from './api.js';
import { h, svg, responsiveFigure, niceCeil, formatCount, pageHead, projectHref, projectTabs, keyTabs, errorNotice, listTable } from './dom.js';
import { openProject, loadProject } from './projects.js';
import { projectMeta } from './keys.js';

const DAY = 86400;
const DAYS = 30;
/** The counts every answer has, first; each denial reason follows, by name. */
const FIRST = ['ok', 'rate_limited', 'credits_exhausted'];

export async function renderProjectUsage(main, projectId, onLeave) {
  const project = await openProject(main, projectId);
  if (!project) return;
  const body = h('div', { id: 'usage-body', 'aria-live': 'polite' });
  main.replaceChildren(
    pageHead([['Projects', '#/'], [project.label, projectHref(projectId)], ['Usage']], `${project.label}: usage`),
    projectMeta(project),
    projectTabs(projectId, 'usage'),
    body,
  );
  await loadUsage(body, projectId, null, onLeave);
}

export async function renderKeyUsage(main, projectId, keyId, onLeave) {
  const project = await loadProject(projectId);
  const body = h('div', { id: 'usage-body', 'aria-live': 'polite' });
  main.replaceChildren(
    pageHead([['Projects', '#/'], [project?.label ?? projectId, projectHref(projectId)], [keyId, projectHref(projectId, 'keys', keyId)], ['Usage']],
      [h('span', { class: 'mono-title', text: keyId }), ': usage']),
    keyTabs(projectId, keyId, 'usage'),
    body,
  );
  await loadUsage(body, projectId, keyId, onLeave);
}

/** The last 30 UTC days (today's included), read and shown in `body`. */
async function loadUsage(body, projectId, keyId, onLeave) {
  const now = Date.now() / 1000;
  const from = (Math.floor(now / DAY) - (DAYS - 1)) * DAY;
  const to = Math.ceil(now);
  let data;
  try {
    data = await api('GET', '/v1/admin/usage', { query: { project_id: projectId, key_id: keyId, from, to, granularity: 'day' } });
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) throw e;
    if (e instanceof ApiError && e.status === 409) body.replaceChildren(notEnabled(e.message));
    else body.replaceChildren(errorNotice(e));
    return;
  }
  const url = URL.createObjectURL(new Blob([csv(data)], { type: 'text/csv' }));
  onLeave(() => URL.revokeObjectURL(url));
  const name = `usage-${projectId}${keyId ? `-${keyId}` : ''}-${day(from)}-to-${day(to - 1)}.csv`;
  body.replaceChildren(...usageView(data, from, url, name));
}

function notEnabled(message) {
  return h('section', { class: 'card', id: 'usage-unavailable' },
    h('h2', { text: 'Usage is not readable on this deployment' }),
    h('p', { class: 'notice info', text: message }),
    h('p', { text: 'keyward reads the usage record with its monitor Redis user (KEYWARD_MONITOR_REDIS_URL), a read-only user of its own; the message above says what it lacks. Reload this page once it is set.' }));
}

/** Unix seconds as the UTC day, `2026-12-01`. */
function day(ts) {
  return new Date(ts * 1000).toISOString().slice(0, 10);
}

const total = (bucket, names) => names.reduce((sum, name) => sum + (bucket.counts[name] ?? 0), 0);

/** Every count name of the answer: FIRST, then the others sorted. */
function countNames(data) {
  const others = new Set();
  for (const b of data.buckets) for (const name of Object.keys(b.counts)) if (!FIRST.includes(name)) others.add(name);
  return [...FIRST, ...[...others].sort()];
}

function usageView(data, from, url, fileName) {
  const names = countNames(data);
  const denials = names.filter((n) => n !== 'ok');
  const sums = Object.fromEntries(names.map((n) => [n, data.buckets.reduce((s, b) => s + (b.counts[n] ?? 0), 0)]));
  const cost = data.buckets.reduce((s, b) => s + b.cost, 0);
  const denied = denials.reduce((s, n) => s + sums[n], 0);
  // The table's columns: the cost, ok, and each count that is not 0 in every day.
  const shown = names.filter((n) => n === 'ok' || sums[n] > 0);
  const byStart = new Map(data.buckets.map((b) => [b.start, b]));
  const days = Array.from({ length: DAYS }, (_, i) => byStart.get(from + i * DAY) ?? { start: from + i * DAY, cost: 0, counts: {} });
  const stat = (id, value, label) => h('div', { class: 'stat' },
    h('span', { class: 'stat-value', id, text: value.toLocaleString() }), h('span', { class: 'stat-label', text: label }));
  return [
    h('section', { class: 'card', 'aria-labelledby': 'usage-chart-title' },
      h('h2', { id: 'usage-chart-title', text: 'Spend per day, last 30 days (UTC)' }),
      h('div', { class: 'stats', id: 'usage-totals' },
        stat('usage-cost', cost, 'cost spent'),
        stat('usage-ok', sums.ok, 'passed'),
        stat('usage-denied', denied, 'refused')),
      chartFigure(days, names)),
    h('section', { class: 'card', 'aria-labelledby': 'usage-table-title' },
      h('div', { class: 'title-row' },
        h('h2', { id: 'usage-table-title', text: 'Days with traffic' }),
        h('a', { class: 'button', id: 'usage-csv', href: url, download: fileName, text: 'Download CSV' })),
      listTable('usage-list', ['Day (UTC)', 'Cost', ...shown.map(label)], h('tbody', {},
        data.buckets.length === 0
          ? h('tr', {}, h('td', { colspan: String(2 + shown.length), class: 'empty', text: 'No validations in the last 30 days.' }))
          : data.buckets.map((b) => h('tr', { 'data-start': b.start },
            h('td', { 'data-label': 'Day (UTC)', text: day(b.start) }),
            h('td', { 'data-label': 'Cost', class: 'num', 'data-count': 'cost', text: b.cost.toLocaleString() }),
            shown.map((n) => h('td', { 'data-label': label(n), class: 'num', 'data-count': n, text: (b.counts[n] ?? 0).toLocaleString() })))))),
      h('p', { class: 'muted', text: 'Cost is what the passes spent (each validation\'s cost, 1 unless the gateway sends another); refusals spend nothing. Days start at 00:00 UTC.' })),
  ];
}

/** A count name for people: `rate_limited` is "Rate limited". */
function label(name) {
  if (name === 'ok') return 'OK';
  const words = name.replaceAll('_', ' ');
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/**
 * The CSV file: `start` (Unix seconds), `start_utc`, `cost` and every count,
 * a row per day with traffic, oldest first, as `keyward usage --format csv`.
 */
function csv(data) {
  const names = countNames(data);
  const lines = [['start', 'start_utc', 'cost', ...names].map(cell).join(',')];
  for (const b of data.buckets) {
    const utc = new Date(b.start * 1000).toISOString().replace('.000Z', 'Z');
    lines.push([b.start, utc, b.cost, ...names.map((n) => b.counts[n] ?? 0)].map(cell).join(','));
  }
  return `${lines.join('\n')}\n`;
}

/** A CSV cell: quoted when it must be, never read as a spreadsheet formula. */
function cell(value) {
  let s = String(value);
  if (typeof value !== 'number' && /^[=+\-@]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/**
 * The chart, drawn at the width it is shown at (so that its text keeps its
 * size), and drawn again when that width changes.
 */
function chartFigure(days, names) {
  return responsiveFigure((width) => [chart(days, names, width)]);
}

/** A bar per day with a cost; the y axis rounded up to a readable number. */
function chart(days, names, W) {
  const H = 220;
  const left = 52;
  const right = 8;
  const top = 12;
  const bottom = 30;
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  const max = niceCeil(Math.max(2, ...days.map((d) => d.cost)));
  const y = (v) => top + plotH - (v / max) * plotH;
  const slot = plotW / days.length;
  const grid = [0, max / 2, max].map((v) => [
    svg('line', { class: 'gridline', x1: left, x2: W - right, y1: y(v), y2: y(v) }),
    svg('text', { class: 'axis', x: left - 6, y: y(v) + 4, 'text-anchor': 'end' }, formatCount(v)),
  ]);
  const bars = days.map((d, i) => {
    const refused = total(d, names.filter((n) => n !== 'ok'));
    const words = [`cost ${d.cost.toLocaleString()}`, `${(d.counts.ok ?? 0).toLocaleString()} passed`, `${refused.toLocaleString()} refused`];
    return svg('g', {}, svg('title', {}, `${day(d.start)}: ${words.join(', ')}`),
      svg('rect', { class: 'hover', x: left + i * slot, y: top, width: slot, height: plotH }),
      d.cost > 0 ? svg('rect', {
        class: 'bar cost', x: left + i * slot + 1, width: Math.max(1, slot - 2), y: y(d.cost), height: Math.max(1, y(0) - y(d.cost)),
        'data-start': d.start, 'data-cost': d.cost,
      }) : null);
  });
  const ticks = W < 560 ? [0, days.length - 1] : [0, 10, 20, days.length - 1];
  const labels = ticks.map((i) => svg('text', {
    class: 'axis',
    x: left + i * slot + slot / 2,
    y: H - 10,
    'text-anchor': i === 0 ? 'start' : i === days.length - 1 ? 'end' : 'middle',
  }, i === days.length - 1 ? 'today' : day(days[i].start).slice(5)));
  const cost = days.reduce((s, d) => s + d.cost, 0);
  return svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'usage-chart-desc', id: 'usage-chart' },
    svg('desc', { id: 'usage-chart-desc' }, `Cost spent per UTC day over the last 30 days: ${cost} in all.`),
    grid, bars, labels);
}
