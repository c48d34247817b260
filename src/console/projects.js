// Projects: the caller's, from GET /v1/admin/projects a page at a time;
// open one by id (for callers of every project: the list holds only the
// projects this deployment created or has read); create one (from the
// project_admin role on).

import { api, ApiError, allows, coversAll } from './api.js';
import { h, field, timeNode, pageHead, projectHref, errorNotice, toast, listTable } from './dom.js';

const PAGE_SIZE = 50;

/** The project's document, or null if there is none this caller may read. */
export async function loadProject(id) {
  try {
    return await api('GET', `/v1/admin/projects/${encodeURIComponent(id)}`);
  } catch (e) {
    if (e instanceof ApiError && e.code === 'project_not_found') return null;
    throw e;
  }
}

// A project's screen opens here: its document, or null after showing that
// there is no such project.
export async function openProject(main, id) {
  const project = await loadProject(id);
  if (!project) {
    main.replaceChildren(
      pageHead([['Projects', '#/'], [id]], id),
      errorNotice({ message: `No project "${id}" that you may read.` }),
    );
  }
  return project;
}

export async function renderProjects(main) {
  let loaded = [];
  let next = null;
  const tbody = h('tbody');
  const summary = h('p', { class: 'muted', id: 'project-summary', role: 'status' });
  const more = h('button', { type: 'button', id: 'projects-more', class: 'button', text: 'Load more projects', hidden: true });
  const status = h('div');
  const load = async () => {
    status.replaceChildren();
    try {
      const page = await api('GET', '/v1/admin/projects', { query: { limit: PAGE_SIZE, cursor: next } });
      loaded = loaded.concat(page.items);
      next = page.next;
    } catch (e) {
      status.append(errorNotice(e));
    }
    tbody.replaceChildren(...loaded.map(projectRow));
    if (loaded.length === 0) {
      const hint = allows('project_admin') ? 'No projects yet: create one.' : 'No projects that you may read.';
      tbody.append(h('tr', {}, h('td', { colspan: '5', class: 'empty', text: hint })));
    }
    summary.textContent = `${loaded.length} project${loaded.length === 1 ? '' : 's'}${next ? ' loaded, more available' : ''}.`;
    more.hidden = !next;
  };
  more.addEventListener('click', load);

  const cards = [coversAll() ? openCard() : null, allows('project_admin') ? createCard() : null].filter(Boolean);
  main.replaceChildren(
    pageHead([['Projects']], 'Projects'),
    ...(cards.length === 2 ? [h('div', { class: 'grid two' }, cards)] : cards),
    h('section', { class: 'card', 'aria-labelledby': 'projects-title' },
      h('h2', { id: 'projects-title', text: 'Your projects' }),
      status,
      summary,
      listTable('project-list', ['Project', 'Label', 'Owner', 'Created', ''], tbody),
      h('div', { class: 'actions start' }, more)),
  );
  await load();
}

function projectRow(p) {
  return h('tr', { 'data-project-id': p.project_id },
    h('td', { 'data-label': 'Project' }, h('a', { href: projectHref(p.project_id), class: 'mono', text: p.project_id })),
    h('td', { 'data-label': 'Label', text: p.label }),
    h('td', { 'data-label': 'Owner', text: p.owner }),
    h('td', { 'data-label': 'Created' }, timeNode(p.created_at)),
    h('td', { class: 'row-actions' },
      h('a', { class: 'button small', href: projectHref(p.project_id, 'activity'), text: 'Activity' })));
}

function openCard() {
  const input = h('input', { name: 'project_id', required: true, autocomplete: 'off', spellcheck: 'false', maxlength: '64' });
  const status = h('div');
  const form = h('form', {
    class: 'card',
    id: 'open-project',
    'aria-labelledby': 'open-title',
    onsubmit: async (event) => {
      event.preventDefault();
      status.replaceChildren();
      const id = input.value.trim();
      try {
        if (await loadProject(id)) location.hash = projectHref(id);
        else status.append(errorNotice({ message: `No project "${id}" that you may read.` }));
      } catch (e) {
        status.append(errorNotice(e));
      }
    },
  },
  h('h2', { id: 'open-title', text: 'Open a project' }),
  field('Project id', input, 'For a project this deployment has not listed yet, e.g. one created elsewhere.'),
  status,
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'button', text: 'Open' })));
  return form;
}

function createCard() {
  const id = h('input', { name: 'project_id', required: true, autocomplete: 'off', spellcheck: 'false', maxlength: '64', pattern: '[A-Za-z0-9_\\-]+' });
  const label = h('input', { name: 'label', required: true, maxlength: '200' });
  const owner = h('input', { name: 'owner', required: true, maxlength: '200' });
  const status = h('div');
  const within = coversAll() ? '' : ' It must be one of your projects.';
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
        toast(`Project ${body.project_id} created.`);
        location.hash = projectHref(body.project_id);
      } catch (e) {
        status.append(errorNotice(e));
      }
    },
  },
  h('h2', { id: 'create-title', text: 'Create a project' }),
  field('Project id', id, `Letters, digits, "-" and "_"; it becomes part of every key.${within}`),
  field('Label', label),
  field('Owner', owner),
  status,
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'button primary', text: 'Create project' })));
}
