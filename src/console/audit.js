// The admin log: every admin call, allowed or refused, newest first, from
// GET /v1/admin/audit a page at a time (of the caller's projects only; the
// server decides). Without a monitor Redis user, how to enable it.

import { api, ApiError } from './api.js';
import { h, field, fmtTime, relative, pageHead, projectHref, projectTabs, errorNotice, listTable } from './dom.js';
import { monitorSteps } from './activity.js';
import { openProject } from './projects.js';
import { projectMeta } from './keys.js';

const PAGE_SIZE = 50;
const OUTCOME_BADGES = {
  ok: 'ok',
  unauthorized: 'bad',
  forbidden: 'bad',
  error: 'bad',
  not_found: 'warn',
  invalid: 'warn',
  conflict: 'warn',
};

/** The admin log of every project the caller sees, or of `projectId`. */
export async function renderAudit(main, projectId) {
  const project = projectId === null ? null : await openProject(main, projectId);
  if (projectId !== null && !project) return;

  let loaded = [];
  let next = null;
  let loads = 0;
  const projectFilter = project ? null : h('input', { id: 'audit-project', name: 'project_id', autocomplete: 'off', spellcheck: 'false', maxlength: '64' });
  const actorFilter = h('input', { id: 'audit-actor', name: 'actor', autocomplete: 'off', spellcheck: 'false', maxlength: '64', placeholder: 'op_… root unknown' });
  const tbody = h('tbody');
  const summary = h('p', { class: 'muted', id: 'audit-summary', role: 'status' });
  const more = h('button', { type: 'button', id: 'audit-more', class: 'button', text: 'Load older entries', hidden: true });
  const status = h('div');
  const body = h('div', { id: 'audit-body' });

  // Only the latest load shows its answer: a filter applied while an
  // earlier page is on its way is not overwritten by it.
  const load = async (reset) => {
    const seq = ++loads;
    status.replaceChildren();
    try {
      const page = await api('GET', '/v1/admin/audit', {
        query: {
          project_id: projectId ?? (projectFilter.value.trim() || null),
          actor: actorFilter.value.trim() || null,
          limit: PAGE_SIZE,
          cursor: reset ? null : next,
        },
      });
      if (seq !== loads) return;
      loaded = reset ? page.items : loaded.concat(page.items);
      next = page.next;
    } catch (e) {
      if (seq !== loads) return;
      if (e instanceof ApiError && e.code === 'activity_unavailable') {
        body.replaceChildren(howToEnable(e.message));
        return;
      }
      status.append(errorNotice(e));
      return;
    }
    tbody.replaceChildren(...loaded.map(entryRow));
    if (loaded.length === 0) tbody.append(h('tr', {}, h('td', { colspan: '7', class: 'empty', text: 'No admin call recorded that you may see.' })));
    summary.textContent = `${loaded.length} entr${loaded.length === 1 ? 'y' : 'ies'} loaded${next ? ', older ones available' : ''}.`;
    more.hidden = !next;
  };
  more.addEventListener('click', () => load(false));

  const filters = h('form', {
    class: 'toolbar filters',
    id: 'audit-filters',
    onsubmit: (event) => {
      event.preventDefault();
      load(true);
    },
  },
  projectFilter ? field('Project', projectFilter) : null,
  field('Actor', actorFilter),
  h('div', { class: 'field' }, h('button', { type: 'submit', class: 'button', text: 'Filter' })));
  body.append(h('section', { class: 'card', 'aria-label': 'Admin calls' },
    filters,
    status,
    summary,
    listTable('audit-list', ['Time', 'Actor', 'Action', 'Project', 'Key', 'Outcome', 'Request'], tbody),
    h('div', { class: 'actions start' }, more)));

  const refresh = h('button', { type: 'button', class: 'button', id: 'audit-refresh', text: 'Refresh', onclick: () => load(true) });
  main.replaceChildren(...(project
    ? [pageHead([['Projects', '#/'], [project.label, projectHref(projectId)], ['Admin log']], `${project.label}: admin log`, refresh),
      projectMeta(project),
      projectTabs(projectId, 'audit')]
    : [pageHead([['Admin log']], 'Admin log', refresh)]),
  body);
  await load(true);
}

function howToEnable(message) {
  return h('section', { class: 'card', id: 'audit-unavailable' },
    h('h2', { text: 'The admin log is not enabled on this deployment' }),
    h('p', { class: 'notice info', text: message }),
    h('p', { text: 'Every admin call is written to the audit:admin stream in Redis. keyward reads the audit streams only with a separate, read-only Redis user (the one the Activity screen reads with). To enable this screen:' }),
    monitorSteps());
}

function entryRow(e) {
  const none = () => h('span', { class: 'muted', text: '—' });
  const key = e.key_id && e.project_id
    ? h('a', { class: 'mono', href: projectHref(e.project_id, 'keys', e.key_id), text: e.key_id })
    : e.key_id ? h('span', { class: 'mono', text: e.key_id }) : none();
  return h('tr', { 'data-entry-id': e.id },
    h('td', { 'data-label': 'Time' }, h('time', { datetime: new Date(e.ts * 1000).toISOString(), title: relative(e.ts), text: fmtTime(e.ts) })),
    h('td', { 'data-label': 'Actor', class: 'mono', text: e.actor ?? '—' }),
    h('td', { 'data-label': 'Action' }, h('code', { text: e.action })),
    h('td', { 'data-label': 'Project' }, e.project_id ? h('a', { class: 'mono', href: projectHref(e.project_id), text: e.project_id }) : none()),
    h('td', { 'data-label': 'Key' }, key),
    h('td', { 'data-label': 'Outcome' },
      e.outcome ? h('span', { class: `badge ${OUTCOME_BADGES[e.outcome] ?? 'info'}`, text: e.outcome }) : none(),
      e.count > 1 ? h('span', { class: 'count', text: ` × ${e.count.toLocaleString()}` }) : null),
    h('td', { 'data-label': 'Request', class: 'mono muted request', text: e.request_id ?? '—' }));
}
