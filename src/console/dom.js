// DOM helpers. Whatever the API returns reaches the page as text or as an
// attribute value, never as HTML (the CSP forbids HTML sinks anyway).

/**
 * Creates an element. `props`: `class`, `text`, `on<event>` (listeners),
 * `value`/`checked`/`disabled` (properties), anything else an attribute
 * (`true` for a bare one; null, undefined and false leave it out).
 */
export function h(tag, props = {}, ...children) {
  return fill(document.createElement(tag), props, children);
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Like `h`, for SVG elements. */
export function svg(tag, props = {}, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), props, children);
}

function fill(el, props, children) {
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') el.setAttribute('class', value);
    else if (name === 'text') el.textContent = value;
    else if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'value' || name === 'checked' || name === 'disabled') el[name] = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

let ids = 0;
/** A fresh id for pairing labels with inputs. */
export function uid(prefix = 'f') {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** A labelled form field around `input`, with an optional hint. */
export function field(label, input, hint) {
  const id = input.id || uid();
  input.id = id;
  const hintNode = hint ? h('span', { class: 'hint', id: `${id}-hint`, text: hint }) : null;
  if (hintNode) input.setAttribute('aria-describedby', hintNode.id);
  return h('div', { class: 'field' }, h('label', { for: id, text: label }), input, hintNode);
}

const pad = (n) => String(n).padStart(2, '0');

/** Unix seconds as local `YYYY-MM-DD HH:MM:SS`; '—' for none. */
export function fmtTime(ts) {
  if (ts === null || ts === undefined) return '—';
  const d = new Date(ts * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Unix seconds as local `HH:MM`. */
export function fmtClock(ts) {
  const d = new Date(ts * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** How long ago (or how far ahead) a Unix time is, roughly. */
export function relative(ts) {
  if (ts === null || ts === undefined) return '';
  const seconds = Math.round(ts - Date.now() / 1000);
  const abs = Math.abs(seconds);
  const [n, unit] = abs < 60 ? [abs, 's'] : abs < 3600 ? [Math.round(abs / 60), 'min']
    : abs < 86400 ? [Math.round(abs / 3600), 'h'] : [Math.round(abs / 86400), 'd'];
  return seconds < 0 ? `${n} ${unit} ago` : `in ${n} ${unit}`;
}

/** A time with its relative form beside it, in a <time> element. */
export function timeNode(ts) {
  if (ts === null || ts === undefined) return h('span', { class: 'muted', text: '—' });
  return h('time', { datetime: new Date(ts * 1000).toISOString(), title: relative(ts) }, fmtTime(ts));
}

/** Where to show the status of a screen's last action. */
export function toast(message) {
  const node = document.getElementById('toast');
  node.textContent = message;
  node.classList.add('shown');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => node.classList.remove('shown'), 4000);
}

/** An error notice for a failed call, announced to screen readers. */
export function errorNotice(error) {
  const code = error?.code ? ` (${error.code})` : '';
  return h('p', { class: 'notice error', role: 'alert' }, `${error?.message ?? error}${code}`);
}

/** Splits a list typed as words separated by commas, spaces or new lines. */
export function words(text) {
  return text.split(/[\s,]+/).filter(Boolean);
}

/** The badges for a key's state. */
export function keyBadges(key, now = Date.now() / 1000) {
  const badges = [];
  if (key.disabled) badges.push(['Disabled', 'bad']);
  if (key.expires_at !== null && key.expires_at <= now) badges.push(['Expired', 'warn']);
  if (!key.disabled && key.previous_expires_at !== null && key.previous_expires_at > now) {
    badges.push(['In rotation', 'info']);
  }
  if (badges.length === 0) badges.push(['Active', 'ok']);
  return h('span', { class: 'badges' }, badges.map(([label, kind]) => h('span', { class: `badge ${kind}`, text: label })));
}

/** A list screen's table: its column headers, then the rows in `tbody`. */
export function listTable(id, columns, tbody) {
  return h('div', { class: 'table-wrap' }, h('table', { class: 'list', id },
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', text: c })))),
    tbody));
}

/** The page's heading row: breadcrumbs, then the title (text or nodes). */
export function pageHead(crumbs, title, ...extra) {
  const trail = h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumbs' },
    h('ol', {}, crumbs.map(([label, href]) => h('li', {}, href ? h('a', { href, text: label }) : h('span', { 'aria-current': 'page', text: label })))));
  return h('div', { class: 'page-head' }, trail, h('div', { class: 'title-row' }, h('h1', { tabindex: '-1' }, title), ...extra));
}

/** A project's URL fragment, with `rest` appended. */
export function projectHref(projectId, ...rest) {
  return `#/p/${[projectId, ...rest].map(encodeURIComponent).join('/')}`;
}

/** A row of tabs: `[label, href, name]` each, `current` marked. */
function tabs(label, entries, current) {
  return h('nav', { class: 'tabs', 'aria-label': label }, entries.map(([text, href, name]) =>
    h('a', { href, class: name === current ? 'tab current' : 'tab', 'aria-current': name === current ? 'page' : null, text })));
}

/** The tabs of a project's screens. */
export function projectTabs(projectId, current) {
  return tabs('Project', [
    ['Keys', projectHref(projectId), 'keys'],
    ['Activity', projectHref(projectId, 'activity'), 'activity'],
    ['Usage', projectHref(projectId, 'usage'), 'usage'],
    ['Admin log', projectHref(projectId, 'audit'), 'audit'],
  ], current);
}

/** The tabs of a key's screens. */
export function keyTabs(projectId, keyId, current) {
  return tabs('Key', [
    ['Key', projectHref(projectId, 'keys', keyId), 'key'],
    ['Usage', projectHref(projectId, 'keys', keyId, 'usage'), 'usage'],
  ], current);
}

/**
 * A chart's figure, drawn by `draw(width)` at the width it is shown at (so
 * that its text keeps its size), and drawn again when that width changes.
 */
export function responsiveFigure(draw) {
  const figure = h('figure', { class: 'chart' });
  let drawn = 0;
  const render = (width) => {
    drawn = width;
    figure.replaceChildren(...draw(width));
  };
  render(Math.max(300, document.getElementById('main').clientWidth - 80));
  new ResizeObserver(([entry]) => {
    const width = Math.round(entry.contentRect.width);
    if (width >= 200 && Math.abs(width - drawn) > 16) render(width);
  }).observe(figure);
  return figure;
}

/** `v` rounded up to 1, 2 or 5 times a power of ten: a chart's y axis. */
export function niceCeil(v) {
  const step = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * step >= v) return m * step;
  return 10 * step;
}

/** A count on a chart's axis. */
export function formatCount(v) {
  return Number.isInteger(v) ? v.toLocaleString() : v.toFixed(1);
}
