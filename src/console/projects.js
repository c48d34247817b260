// Projects: the ones remembered in this browser, open one by id, create one.
//
// The admin API has no "list every project" call (the manager Redis user
// may not scan the keyspace), so the console remembers the ids of projects
// opened or created here, in localStorage: ids only, never the token.

import { api, ApiError } from './api.js';
import { h, field, timeNode, pageHead, projectHref, errorNotice, toast } from './dom.js';

const REMEMBERED = 'keyward.projects';
const MAX_REMEMBERED = 30;

export function rememberedProjects() {
  try {
    const ids = JSON.parse(localStorage.getItem(REMEMBERED) ?? '[]');
    return Array.isArray(ids) ? ids.filter((id) => typeof id === 'string') : [];
  } catch {
    return [];
  }
}

/** Puts `id` first in the remembered list. */
export function rememberProject(id) {
  const ids = [id, ...rememberedProjects().filter((other) => other !== id)].slice(0, MAX_REMEMBERED);
  localStorage.setItem(REMEMBERED, JSON.stringify(ids));
}

function forgetProject(id) {
  localStorage.setItem(REMEMBERED, JSON.stringify(rememberedProjects().filter((other) => other !== id)));
}

/** The project's document, or null if there is none this deployment may read. */
export async function loadProject(id) {
  try {
    return await api('GET', `/v1/admin/projects/${encodeURIComponent(id)}`);
  } catch (e) {
    if (e instanceof ApiError && e.code === 'project_not_found') return null;
    throw e;
  }
}

// A project's screen opens here: its document, remembered in this browser,
// or null after showing that there is no such project.
export async function openProject(main, id) {
  const project = await loadProject(id);
  if (!project) {
    main.replaceChildren(
      pageHead([['Projects', '#/'], [id]], id),
      errorNotice({ message: `No project "${id}" that this deployment may read.` }),
    );
    return null;
  }
  rememberProject(id);
  return project;
}

export async function renderProjects(main) {
  const list = h('section', { class: 'card', 'aria-labelledby': 'remembered-title' },
    h('h2', { id: 'remembered-title', text: 'Your projects' }),
    h('p', { class: 'muted', text: 'Projects opened or created in this browser.' }));
  main.replaceChildren(
    pageHead([['Projects']], 'Projects'),
    h('div', { class: 'grid two' }, openCard(), createCard()),
    list,
  );
  const ids = rememberedProjects();
  if (ids.length === 0) {
    list.append(h('p', { class: 'empty', text: 'None yet: open a project by its id or create one.' }));
    return;
  }
  const docs = await Promise.all(ids.map((id) => loadProject(id).catch(() => null)));
  const rows = ids.map((id, i) => {
    const doc = docs[i];
    return h('tr', {},
      h('td', { 'data-label': 'Project' }, doc ? h('a', { href: projectHref(id), class: 'mono', text: id }) : h('span', { class: 'mono', text: id })),
      h('td', { 'data-label': 'Label', text: doc ? doc.label : 'not readable by this deployment' }),
      h('td', { 'data-label': 'Owner', text: doc ? doc.owner : '—' }),
      h('td', { 'data-label': 'Created' }, doc ? timeNode(doc.created_at) : '—'),
      h('td', { class: 'row-actions' },
        doc ? h('a', { class: 'button small', href: projectHref(id, 'activity'), text: 'Activity' }) : null,
        h('button', {
          type: 'button',
          class: 'button small quiet',
          'aria-label': `Forget ${id}`,
          text: 'Forget',
          onclick: () => {
            forgetProject(id);
            renderProjects(main);
          },
        })));
  });
  list.append(h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'project-list' },
    h('thead', {}, h('tr', {}, ['Project', 'Label', 'Owner', 'Created', ''].map((c) => h('th', { scope: 'col', text: c })))),
    h('tbody', {}, rows))));
}

function openCard() {
  const input = h('input', { name: 'project_id', required: true, autocomplete: 'off', spellcheck: 'false', maxlength: '64' });
  const status = h('div');
  const form = h('form', {
    class: 'card',
    'aria-labelledby': 'open-title',
    onsubmit: async (event) => {
      event.preventDefault();
      status.replaceChildren();
      const id = input.value.trim();
      try {
        const doc = await loadProject(id);
        if (!doc) {
          status.append(errorNotice({ message: `No project "${id}" that this deployment may read.` }));
          return;
        }
        rememberProject(id);
        location.hash = projectHref(id);
      } catch (e) {
        status.append(errorNotice(e));
      }
    },
  },
  h('h2', { id: 'open-title', text: 'Open a project' }),
  field('Project id', input),
  status,
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'button', text: 'Open' })));
  return form;
}

function createCard() {
  const id = h('input', { name: 'project_id', required: true, autocomplete: 'off', spellcheck: 'false', maxlength: '64', pattern: '[A-Za-z0-9_\\-]+' });
  const label = h('input', { name: 'label', required: true, maxlength: '200' });
  const owner = h('input', { name: 'owner', required: true, maxlength: '200' });
  const status = h('div');
  return h('form', {
    class: 'card',
    id: 'create-project',
    'aria-labelledby': 'create-title',
    onsubmit: async (event) => {
      event.preventDefault();
      status.replaceChildren();
      const body = { project_id: id.value.trim(), label: label.value.trim(), owner: owner.value.trim() };
      try {
        await api('POST', '/v1/admin/projects', { body });
        rememberProject(body.project_id);
        toast(`Project ${body.project_id} created.`);
        location.hash = projectHref(body.project_id);
      } catch (e) {
        status.append(errorNotice(e));
      }
    },
  },
  h('h2', { id: 'create-title', text: 'Create a project' }),
  field('Project id', id, 'Letters, digits, "-" and "_"; it becomes part of every key.'),
  field('Label', label),
  field('Owner', owner),
  status,
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'button primary', text: 'Create project' })));
}
