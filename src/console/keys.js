// A project's keys: paged with the API's cursor, searched on the loaded
// pages, and minted (from the key_manager role on) from a dialog that shows
// the new key once.

import { api, allows } from './api.js';
import { h, field, timeNode, relative, pageHead, projectHref, projectTabs, keyBadges, errorNotice, toast, words, listTable } from './dom.js';
import { modal, secretView } from './dialogs.js';
import { openProject } from './projects.js';
import { describeCredits, planFields } from './plan.js';

const PAGE_SIZES = [10, 25, 50, 100];
let pageSize = 25;

export async function renderKeys(main, projectId) {
  const project = await openProject(main, projectId);
  if (!project) return;

  let loaded = [];
  let next = null;
  const search = h('input', { type: 'search', id: 'key-search', placeholder: 'Owner or key id', autocomplete: 'off', spellcheck: 'false' });
  const size = h('select', { id: 'page-size' }, PAGE_SIZES.map((n) => h('option', { value: String(n), selected: n === pageSize, text: String(n) })));
  const tbody = h('tbody');
  const summary = h('p', { class: 'muted', id: 'key-summary', role: 'status' });
  const more = h('button', { type: 'button', id: 'load-more', class: 'button', text: 'Load more keys', hidden: true });
  const status = h('div');

  const show = () => {
    const q = search.value.trim().toLowerCase();
    const shown = q ? loaded.filter((k) => k.owner.toLowerCase().includes(q) || k.key_id.toLowerCase().includes(q)) : loaded;
    tbody.replaceChildren(...shown.map((k) => keyRow(projectId, k)));
    if (shown.length === 0) {
      tbody.append(h('tr', {}, h('td', { colspan: '8', class: 'empty', text: loaded.length ? 'No loaded key matches.' : emptyText })));
    }
    const loadedText = `${loaded.length} key${loaded.length === 1 ? '' : 's'} loaded${next ? ', more available' : ''}`;
    summary.textContent = q ? `${shown.length} of ${loadedText} match "${search.value.trim()}".` : `${loadedText}.`;
    more.hidden = !next;
  };
  const load = async (reset) => {
    status.replaceChildren();
    try {
      const page = await api('GET', '/v1/list-keys', {
        query: { project_id: projectId, limit: pageSize, cursor: reset ? null : next },
      });
      loaded = reset ? page.items : loaded.concat(page.items);
      next = page.next;
      show();
    } catch (e) {
      status.append(errorNotice(e));
    }
  };
  search.addEventListener('input', show);
  size.addEventListener('change', () => {
    pageSize = Number(size.value);
    load(true);
  });
  more.addEventListener('click', () => load(false));

  const mayMint = allows('key_manager');
  const emptyText = mayMint ? 'No keys yet: mint one.' : 'No keys yet.';
  const mint = mayMint && h('button', {
    type: 'button',
    id: 'mint-open',
    class: 'button primary',
    text: 'Mint a key',
    onclick: async () => {
      if (await mintDialog(projectId)) load(true);
    },
  });
  main.replaceChildren(
    pageHead([['Projects', '#/'], [project.label]], project.label, mint),
    projectMeta(project),
    projectTabs(projectId, 'keys'),
    h('section', { class: 'card', 'aria-label': 'Keys' },
      h('div', { class: 'toolbar' },
        field('Search loaded keys', search),
        field('Keys per page', size)),
      status,
      summary,
      listTable('key-list', ['Key id', 'Owner', 'Server', 'Status', 'Usage', 'Credits', 'Last used', 'Expires'], tbody),
      h('div', { class: 'actions start' }, more)),
  );
  await load(true);
}

export function projectMeta(project) {
  return h('p', { class: 'muted project-meta' },
    h('span', { class: 'mono', text: project.project_id }), ` · owner ${project.owner} · created `, timeNode(project.created_at));
}

function keyRow(projectId, k) {
  return h('tr', { 'data-key-id': k.key_id },
    h('td', { 'data-label': 'Key id' }, h('a', { class: 'mono', href: projectHref(projectId, 'keys', k.key_id), text: k.key_id })),
    h('td', { 'data-label': 'Owner', text: k.owner }),
    h('td', { 'data-label': 'Server', text: k.server_name }),
    h('td', { 'data-label': 'Status' }, keyBadges(k)),
    h('td', { 'data-label': 'Usage', class: 'num', text: k.usage_count.toLocaleString() }),
    h('td', { 'data-label': 'Credits', class: 'num', title: describeCredits(k.credits) },
      k.credits ? k.credits.remaining.toLocaleString() : h('span', { class: 'muted', text: 'unlimited' })),
    h('td', { 'data-label': 'Last used', title: k.last_used ? relative(k.last_used) : null }, k.last_used ? relative(k.last_used) : h('span', { class: 'muted', text: 'never' })),
    h('td', { 'data-label': 'Expires' }, k.expires_at ? timeNode(k.expires_at) : h('span', { class: 'muted', text: 'never' })));
}

/**
 * The fields a key can be given at mint and changed by update, as inputs,
 * pre-filled from `key` when given. `read(onlyChanged)` turns them into API
 * fields (null for a cleared optional one, `[]` for no windows), only those
 * edited since the form was built when `onlyChanged`, or throws an Error
 * with a message.
 */
export function keyFields(key) {
  const inputs = {
    owner: h('input', { required: true, maxlength: '200', value: key?.owner ?? '' }),
    server_name: h('input', { required: true, maxlength: '200', value: key?.server_name ?? '' }),
    scopes: h('input', { autocomplete: 'off', spellcheck: 'false', value: (key?.scopes ?? []).join(' ') }),
    rate_limit_per_minute: h('input', { type: 'number', min: '1', step: '1', inputmode: 'numeric', value: key?.rate_limit_per_minute ?? '' }),
    expires_at: h('input', { type: 'datetime-local', value: key?.expires_at ? localInput(key.expires_at) : '' }),
    allowed_cidrs: h('input', { autocomplete: 'off', spellcheck: 'false', value: (key?.allowed_cidrs ?? []).join(' ') }),
    metadata: h('textarea', { rows: '3', spellcheck: 'false', value: key && key.metadata !== null ? JSON.stringify(key.metadata, null, 2) : '' }),
  };
  const plan = planFields(key);
  const initial = Object.fromEntries(Object.entries(inputs).map(([name, el]) => {
    el.name = name;
    return [name, el.value];
  }));
  const parse = {
    owner: (v) => v.trim(),
    server_name: (v) => v.trim(),
    scopes: (v) => words(v),
    rate_limit_per_minute: (v) => (v === '' ? null : Number(v)),
    expires_at: (v) => {
      if (!v) return null;
      const at = new Date(v).getTime() / 1000;
      if (!Number.isFinite(at)) throw new Error('Expires at is not a date.');
      return at;
    },
    allowed_cidrs: (v) => (words(v).length ? words(v) : null),
    metadata: (v) => {
      if (!v.trim()) return null;
      try {
        return JSON.parse(v);
      } catch {
        throw new Error('Metadata must be valid JSON.');
      }
    },
  };
  const nodes = [
    h('div', { class: 'grid two' },
      field('Owner', inputs.owner),
      field('Server name', inputs.server_name)),
    field('Scopes', inputs.scopes, 'Separated by spaces or commas, e.g. chat:read chat:*. Empty: none.'),
    h('div', { class: 'grid two' },
      field('Rate limit per minute', inputs.rate_limit_per_minute, 'Empty: the deployment default.'),
      field('Expires at (local time)', inputs.expires_at, 'Empty: never.')),
    field('Allowed networks', inputs.allowed_cidrs, 'CIDRs separated by spaces, e.g. 10.0.0.0/8. Empty: anywhere.'),
    field('Metadata (JSON)', inputs.metadata, 'Empty: none.'),
    ...plan.nodes,
  ];
  const read = (onlyChanged = false) => {
    const out = plan.read(onlyChanged);
    for (const [name, el] of Object.entries(inputs)) {
      if (!onlyChanged || el.value !== initial[name]) out[name] = parse[name](el.value);
    }
    return out;
  };
  return { nodes, read };
}

/** Unix seconds as a datetime-local input value, in local time. */
function localInput(ts) {
  const d = new Date(ts * 1000);
  d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
  return d.toISOString().slice(0, 16);
}

/** The mint dialog; resolves to true if a key was minted. */
function mintDialog(projectId) {
  let minted = false;
  return modal((ctl) => {
    const { nodes, read } = keyFields(null);
    const status = h('div');
    const form = h('form', {
      id: 'mint-form',
      onsubmit: async (event) => {
        event.preventDefault();
        status.replaceChildren();
        let body;
        try {
          body = { project_id: projectId, ...read() };
        } catch (e) {
          status.append(errorNotice(e));
          return;
        }
        // Mint takes no nulls for what it would default anyway.
        for (const name of ['rate_limit_per_minute', 'expires_at', 'allowed_cidrs', 'credits']) {
          if (body[name] === null) delete body[name];
        }
        if (body.metadata === null) delete body.metadata;
        if (body.limits.length === 0) delete body.limits;
        try {
          const out = await api('POST', '/v1/mint-key', { body });
          minted = true;
          toast(`Key ${out.key_id} minted.`);
          ctl.replace(...secretView(ctl, {
            title: `New key ${out.key_id}`,
            secret: out.api_key,
            note: `For ${body.owner} on ${body.server_name}.`,
          }));
        } catch (e) {
          status.append(errorNotice(e));
        }
      },
    },
    ...nodes,
    status,
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'button quiet', onclick: () => ctl.close(), text: 'Cancel' }),
      h('button', { type: 'submit', class: 'button primary', id: 'mint-submit', text: 'Mint key' })));
    return [h('h2', { id: 'dialog-title', text: `Mint a key in ${projectId}` }), form];
  }).then(() => minted);
}
