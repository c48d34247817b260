// A project's activity: validations per minute by result over the last
// hour (an SVG bar chart) and the most recent validations, from
// GET /v1/activity. Without a monitor Redis user, how to enable it.

import { api, ApiError } from './api.js';
import { h, svg, responsiveFigure, niceCeil, formatCount, fmtClock, fmtTime, pageHead, projectHref, projectTabs, errorNotice, listTable } from './dom.js';
import { openProject } from './projects.js';
import { projectMeta } from './keys.js';

const RESULTS = [
  ['ok', 'OK'],
  ['denied', 'Denied'],
  ['rate_limited', 'Rate limited'],
  ['other', 'Other'],
];
const REFRESH_MS = 15000;

export async function renderActivity(main, projectId, onLeave) {
  const project = await openProject(main, projectId);
  if (!project) return;
  const body = h('div', { id: 'activity-body', 'aria-live': 'polite' });
  const refresh = h('button', { type: 'button', class: 'button', id: 'activity-refresh', text: 'Refresh' });
  main.replaceChildren(
    pageHead([['Projects', '#/'], [project.label, projectHref(projectId)], ['Activity']], `${project.label}: activity`, refresh),
    projectMeta(project),
    projectTabs(projectId, 'activity'),
    body,
  );
  let unavailable = false;
  const load = async () => {
    try {
      const data = await api('GET', '/v1/activity', { query: { project_id: projectId, limit: 50 } });
      body.replaceChildren(...activityView(data));
    } catch (e) {
      if (e instanceof ApiError && e.code === 'activity_unavailable') {
        unavailable = true;
        body.replaceChildren(howToEnable(e.message));
      } else {
        body.replaceChildren(errorNotice(e));
      }
    }
  };
  refresh.addEventListener('click', load);
  await load();
  if (!unavailable) {
    const timer = setInterval(() => {
      if (!document.hidden) load();
    }, REFRESH_MS);
    onLeave(() => clearInterval(timer));
  }
}

function howToEnable(message) {
  return h('section', { class: 'card', id: 'activity-unavailable' },
    h('h2', { text: 'Activity is not enabled on this deployment' }),
    h('p', { class: 'notice info', text: message }),
    h('p', { text: 'Every validation is written to this deployment\'s audit stream in Redis. keyward reads it only with a separate, read-only Redis user, so that the validator and manager users can never read other clients\' traffic. To enable this screen:' }),
    monitorSteps());
}

/** How to give keyward its monitor Redis user, which reads the audit streams. */
export function monitorSteps() {
  return h('ol', { class: 'steps' },
    h('li', {}, 'Print the monitor user\'s rule with ', h('code', { text: 'keyward acl NAME --role monitor --deployment CLIENT' }), ' (add ', h('code', { text: '--audit-layout deployment' }), ' when the deployment runs with ', h('code', { text: 'KEYWARD_AUDIT_LAYOUT=deployment' }), ': then it reads this client\'s streams and no other\'s), add it to the ACL file and run ', h('code', { text: 'ACL LOAD' }), '. It may only read the audit streams (XRANGE, XREVRANGE, XLEN).'),
    h('li', {}, 'Start keyward with ', h('code', { text: 'KEYWARD_MONITOR_REDIS_URL=redis://NAME:PASSWORD@host:port' }), ' (or ', h('code', { text: 'KEYWARD_MONITOR_REDIS_URL_FILE' }), ').'),
    h('li', {}, 'Reload this page.'));
}

function activityView(data) {
  const nodes = [];
  if (!data.complete) {
    nodes.push(h('p', { class: 'notice warn', id: 'activity-partial' },
      `The audit stream is busy: only its last ${data.scanned.toLocaleString()} entries (of every project) were read, back to ${fmtTime(data.covered_from)}. Counts before that are missing.`));
  }
  const total = RESULTS.reduce((sum, [name]) => sum + data.totals[name], 0);
  nodes.push(h('section', { class: 'card', 'aria-labelledby': 'chart-title' },
    h('h2', { id: 'chart-title', text: 'Validations per minute, last hour' }),
    h('div', { class: 'stats', id: 'activity-totals' },
      h('div', { class: 'stat' }, h('span', { class: 'stat-value', text: total.toLocaleString() }), h('span', { class: 'stat-label', text: 'validations' })),
      RESULTS.filter(([name]) => name !== 'other' || data.totals.other > 0).map(([name, label]) => h('div', { class: `stat ${name}` },
        h('span', { class: 'stat-value', 'data-result': name, text: data.totals[name].toLocaleString() }),
        h('span', { class: 'stat-label' }, h('span', { class: `swatch ${name}`, 'aria-hidden': 'true' }), label)))),
    chartFigure(data.per_minute, total)));
  nodes.push(h('section', { class: 'card', 'aria-labelledby': 'recent-title' },
    h('h2', { id: 'recent-title', text: 'Recent validations' }),
    data.recent.length === 0
      ? h('p', { class: 'empty', text: 'No validation of this project\'s keys in the last hour.' })
      : listTable('recent-list', ['Time', 'Key id', 'Result', 'Reason', 'Request', 'Gateway'], h('tbody', {}, data.recent.map(recentRow)))));
  return nodes;
}

function recentRow(e) {
  const label = RESULTS.find(([name]) => name === e.result)?.[1] ?? e.result;
  return h('tr', {},
    h('td', { 'data-label': 'Time' }, h('time', { datetime: new Date(e.ts * 1000).toISOString(), text: fmtTime(e.ts) })),
    h('td', { 'data-label': 'Key id', class: 'mono', text: e.key_id || '—' }),
    h('td', { 'data-label': 'Result' },
      h('span', { class: `badge ${e.result === 'ok' ? 'ok' : e.result === 'rate_limited' ? 'warn' : 'bad'}`, text: label }),
      e.count > 1 ? h('span', { class: 'count', text: ` × ${e.count.toLocaleString()}` }) : null),
    h('td', { 'data-label': 'Reason' }, e.reason ? h('code', { text: e.reason }) : h('span', { class: 'muted', text: 'not recorded' }),
      e.summary ? h('span', { class: 'muted', text: ' (summary)' }) : null),
    h('td', { 'data-label': 'Request', class: 'mono' }, e.method ? `${e.method} ${e.path ?? ''}` : h('span', { class: 'muted', text: '—' })),
    h('td', { 'data-label': 'Gateway', text: e.client ?? '—' }));
}

/**
 * The chart, drawn at the width it is shown at (so that its text keeps its
 * size), and drawn again when that width changes.
 */
function chartFigure(minutes, total) {
  const legend = h('figcaption', { class: 'legend' }, RESULTS.map(([name, label]) => h('span', {}, h('span', { class: `swatch ${name}`, 'aria-hidden': 'true' }), label)));
  return responsiveFigure((width) => [chart(minutes, total, width), legend]);
}

/** A stacked bar per minute; the y axis rounded up to a readable number. */
function chart(minutes, total, W) {
  const H = 220;
  const left = 44;
  const right = 8;
  const top = 12;
  const bottom = 30;
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  const max = niceCeil(Math.max(2, ...minutes.map((m) => RESULTS.reduce((s, [name]) => s + m[name], 0))));
  const y = (v) => top + plotH - (v / max) * plotH;
  const slot = plotW / minutes.length;
  const grid = [0, max / 2, max].map((v) => [
    svg('line', { class: 'gridline', x1: left, x2: W - right, y1: y(v), y2: y(v) }),
    svg('text', { class: 'axis', x: left - 6, y: y(v) + 4, 'text-anchor': 'end' }, formatCount(v)),
  ]);
  const bars = minutes.map((m, i) => {
    let base = 0;
    const x = left + i * slot + 1;
    const parts = RESULTS.filter(([name]) => m[name] > 0).map(([name]) => {
      const rect = svg('rect', { class: `bar ${name}`, x, width: Math.max(1, slot - 2), y: y(base + m[name]), height: Math.max(1, y(base) - y(base + m[name])) });
      base += m[name];
      return rect;
    });
    const counts = RESULTS.filter(([name]) => m[name] > 0).map(([name, label]) => `${m[name]} ${label.toLowerCase()}`);
    return svg('g', {}, svg('title', {}, `${fmtClock(m.minute)}: ${counts.length ? counts.join(', ') : 'none'}`),
      svg('rect', { class: 'hover', x: left + i * slot, y: top, width: slot, height: plotH }), parts);
  });
  const ticks = W < 560 ? [0, 30, minutes.length - 1] : [0, 15, 30, 45, minutes.length - 1];
  const labels = ticks.map((i) => svg('text', {
    class: 'axis',
    x: left + i * slot + slot / 2,
    y: H - 10,
    'text-anchor': i === 0 ? 'start' : i === minutes.length - 1 ? 'end' : 'middle',
  }, i === minutes.length - 1 ? 'now' : fmtClock(minutes[i].minute)));
  return svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'chart-desc', id: 'activity-chart' },
    svg('desc', { id: 'chart-desc' }, `Validations per minute over the last hour: ${total} in all.`),
    grid, bars, labels);
}
