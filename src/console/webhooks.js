// Webhooks: the endpoints of the caller's projects (GET /v1/admin/webhooks),
// one endpoint and its recent deliveries, newest first, refreshed while the
// screen is open; from the project_admin role on, add one (its signing
// secret shown once), send it a webhook.test, and delete it.

import { api, ApiError, allows, catalog, coversAll, me } from './api.js';
import { h, field, timeNode, relative, pageHead, errorNotice, toast, words, listTable } from './dom.js';
import { confirmAction, modal, secretView } from './dialogs.js';

const DELIVERIES = 50;
const REFRESH_MS = 5000;
// After a test is queued: how often, and how long, to look for its attempt.
const WATCH_MS = 1000;
const WATCH_FOR_MS = 30000;

const webhookHref = (id) => `#/webhooks/${encodeURIComponent(id)}`;
const listed = (list, every) => (list.includes('*') ? every : list.join(', '));

function statusBadge(w) {
  return w.disabled
    ? h('span', { class: 'badge bad', title: w.disabled_at ? `Since ${relative(w.disabled_at)}` : null, text: 'Disabled' })
    : h('span', { class: 'badge ok', text: 'Active' });
}

/** Every endpoint the caller may see: the list's pages, cursor to cursor. */
async function allWebhooks() {
  const items = [];
  let cursor = null;
  do {
    const page = await api('GET', '/v1/admin/webhooks', { query: { limit: 100, cursor } });
    items.push(...page.items);
    cursor = page.next;
  } while (cursor);
  return { items };
}

export async function renderWebhooks(main) {
  const mayManage = allows('project_admin');
  const tbody = h('tbody');
  const summary = h('p', { class: 'muted', id: 'webhook-summary', role: 'status' });
  const status = h('div');
  const load = async () => {
    status.replaceChildren();
    let items;
    try {
      ({ items } = await allWebhooks());
    } catch (e) {
      status.append(errorNotice(e));
      return;
    }
    tbody.replaceChildren(...items.map(webhookRow));
    if (items.length === 0) {
      const hint = mayManage ? 'No endpoints yet: add one.' : 'No endpoints that you may see.';
      tbody.append(h('tr', {}, h('td', { colspan: '6', class: 'empty', text: hint })));
    }
    summary.textContent = `${items.length} endpoint${items.length === 1 ? '' : 's'}.`;
  };

  const add = mayManage && h('button', {
    type: 'button',
    id: 'webhook-add-open',
    class: 'button primary',
    text: 'Add an endpoint',
    onclick: async () => {
      if (await addDialog()) await load();
    },
  });
  main.replaceChildren(
    pageHead([['Webhooks']], 'Webhooks', add),
    h('p', { class: 'muted', text: 'keyward posts each event of your projects to the endpoints that want it, signed (Standard Webhooks), and retries until it is delivered or the retry schedule is over.' }),
    h('section', { class: 'card', 'aria-labelledby': 'webhooks-title' },
      h('h2', { id: 'webhooks-title', text: 'Endpoints' }),
      status,
      summary,
      listTable('webhook-list', ['Endpoint', 'URL', 'Events', 'Projects', 'Status', 'Created'], tbody)),
  );
  await load();
}

function webhookRow(w) {
  return h('tr', { 'data-webhook-id': w.webhook_id },
    h('td', { 'data-label': 'Endpoint' },
      h('a', { class: 'mono', href: webhookHref(w.webhook_id), text: w.webhook_id }),
      w.description ? h('div', { class: 'muted', text: w.description }) : null),
    h('td', { 'data-label': 'URL', class: 'mono url', text: w.url }),
    h('td', { 'data-label': 'Events', text: listed(w.events, 'every event') }),
    h('td', { 'data-label': 'Projects', text: listed(w.projects, 'every project') }),
    h('td', { 'data-label': 'Status' }, statusBadge(w)),
    h('td', { 'data-label': 'Created' }, timeNode(w.created_at)));
}

/** The add dialog; resolves to true if an endpoint was added. */
function addDialog() {
  let added = false;
  return modal((ctl) => {
    const url = h('input', { type: 'url', name: 'url', required: true, maxlength: '2048', autocomplete: 'off', spellcheck: 'false' });
    const all = h('input', { type: 'checkbox', name: 'all-events', id: 'webhook-all-events', checked: true });
    const boxes = catalog().event_types.map((type) => h('input', { type: 'checkbox', name: 'event', value: type, disabled: true }));
    all.addEventListener('change', () => {
      for (const box of boxes) box.disabled = all.checked;
    });
    const check = (input, label) => h('label', { class: 'check' }, input, label);
    const events = h('fieldset', { class: 'plan' },
      h('legend', { text: 'Events' }),
      check(all, 'Every event type, including ones added later'),
      h('div', { class: 'checks' }, boxes.map((box) => check(box, h('code', { text: box.value })))));
    const caller = me();
    const projects = h('input', { name: 'projects', required: true, autocomplete: 'off', spellcheck: 'false', value: coversAll() ? '*' : caller.projects.join(' ') });
    const description = h('input', { name: 'description', maxlength: '500' });
    const status = h('div');
    const form = h('form', {
      id: 'webhook-form',
      onsubmit: async (event) => {
        event.preventDefault();
        status.replaceChildren();
        const body = {
          url: url.value.trim(),
          events: all.checked ? ['*'] : boxes.filter((b) => b.checked).map((b) => b.value),
          projects: words(projects.value),
        };
        if (body.events.length === 0) {
          status.append(errorNotice({ message: 'Choose at least one event type.' }));
          return;
        }
        if (description.value.trim()) body.description = description.value.trim();
        try {
          const out = await api('POST', '/v1/admin/webhooks', { body });
          added = true;
          toast(`Endpoint ${out.webhook_id} added.`);
          ctl.replace(...secretView(ctl, {
            title: `New endpoint ${out.webhook_id}`,
            secret: out.secret,
            what: 'signing secret',
            why: 'keyward keeps it only to sign what it sends, and never shows it again.',
            note: `Verify the webhook-signature header of each post to ${out.url} with it (Standard Webhooks).`,
          }));
        } catch (e) {
          status.append(errorNotice(e));
        }
      },
    },
    field('URL', url, 'Where events are posted: http or https. keyward may refuse an internal address.'),
    events,
    field('Projects', projects, coversAll()
      ? 'Project ids separated by spaces or commas, or * for every project.'
      : 'Project ids separated by spaces or commas: your projects only.'),
    field('Description', description, 'Optional.'),
    status,
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'button quiet', onclick: () => ctl.close(), text: 'Cancel' }),
      h('button', { type: 'submit', class: 'button primary', id: 'webhook-submit', text: 'Add endpoint' })));
    return [h('h2', { id: 'dialog-title', text: 'Add a webhook endpoint' }), form];
  }).then(() => added);
}

/** One endpoint: what it is, its deliveries, and test and delete. */
export async function renderWebhook(main, webhookId, onLeave) {
  const { items } = await allWebhooks();
  const w = items.find((item) => item.webhook_id === webhookId);
  if (!w) {
    main.replaceChildren(
      pageHead([['Webhooks', '#/webhooks'], [webhookId]], webhookId),
      errorNotice({ message: `No endpoint ${webhookId} that you may see.` }),
    );
    return;
  }

  const tbody = h('tbody');
  const summary = h('p', { class: 'muted', id: 'delivery-summary', role: 'status' });
  const status = h('div');
  let loads = 0;
  // The message of a test just queued, until its first attempt shows.
  let watching = null;
  let watchUntil = 0;
  const load = async () => {
    const seq = ++loads;
    let page;
    try {
      page = await api('GET', `/v1/admin/webhooks/${encodeURIComponent(webhookId)}/deliveries`, { query: { limit: DELIVERIES } });
    } catch (e) {
      if (seq === loads) status.replaceChildren(errorNotice(e));
      return;
    }
    if (seq !== loads) return;
    status.replaceChildren();
    tbody.replaceChildren(...page.items.map(deliveryRow));
    if (page.items.length === 0) tbody.append(h('tr', {}, h('td', { colspan: '6', class: 'empty', text: 'No delivery attempt yet.' })));
    summary.textContent = `${page.items.length} attempt${page.items.length === 1 ? '' : 's'}, newest first${page.items.length === DELIVERIES ? ` (the last ${DELIVERIES})` : ''}.`;
    if (watching && (page.items.some((d) => d.message_id === watching) || Date.now() > watchUntil)) watching = null;
  };

  let timer = null;
  let left = false;
  const tick = async () => {
    if (!document.hidden) await load();
    // One timer at a time, however many ticks overlap (a test starts one).
    clearTimeout(timer);
    if (!left) timer = setTimeout(tick, watching ? WATCH_MS : REFRESH_MS);
  };
  onLeave(() => {
    left = true;
    clearTimeout(timer);
  });

  const watch = (messageId) => {
    watching = messageId;
    watchUntil = Date.now() + WATCH_FOR_MS;
    tick();
  };
  const details = detailsCard(w);
  const refresh = h('button', { type: 'button', class: 'button', id: 'delivery-refresh', text: 'Refresh', onclick: load });
  main.replaceChildren(
    pageHead([['Webhooks', '#/webhooks'], [w.webhook_id]], [h('span', { class: 'mono-title', text: w.webhook_id }), ' ', statusBadge(w)], refresh),
    allows('project_admin') ? h('div', { class: 'grid two' }, details, manageCard(w, watch)) : details,
    h('section', { class: 'card', 'aria-labelledby': 'deliveries-title' },
      h('h2', { id: 'deliveries-title', text: 'Recent deliveries' }),
      status,
      summary,
      listTable('delivery-list', ['Time', 'Event', 'Attempt', 'Result', 'Answer', 'Message'], tbody)),
  );
  await tick();
}

function detailsCard(w) {
  const row = (label, value) => [h('dt', { text: label }), h('dd', {}, value)];
  const chips = (list, every) => (list.includes('*')
    ? h('span', { text: every })
    : h('span', { class: 'chips' }, list.map((item) => h('code', { class: 'chip', text: item }))));
  return h('section', { class: 'card', 'aria-labelledby': 'webhook-details-title' },
    h('h2', { id: 'webhook-details-title', text: 'Endpoint' }),
    h('dl', { class: 'facts', id: 'webhook-details' },
      row('URL', h('span', { class: 'mono', text: w.url })),
      row('Events', chips(w.events, 'every event type')),
      row('Projects', chips(w.projects, 'every project')),
      row('Description', w.description ?? h('span', { class: 'muted', text: 'none' })),
      row('Created', [timeNode(w.created_at), ' by ', h('span', { class: 'mono', text: w.created_by })]),
      w.disabled ? row('Disabled', [timeNode(w.disabled_at), ' (it answered 410 Gone)']) : null));
}

function manageCard(w, watch) {
  const status = h('div', { id: 'webhook-status' });
  const test = async () => {
    status.replaceChildren();
    try {
      const out = await api('POST', `/v1/admin/webhooks/${encodeURIComponent(w.webhook_id)}/test`);
      status.append(h('p', { class: 'notice info', role: 'status' }, 'Test queued as ', h('code', { text: out.message_id }), ': its attempts show below.'));
      watch(out.message_id);
    } catch (e) {
      status.append(errorNotice(e));
    }
  };
  const remove = async () => {
    status.replaceChildren();
    const ok = await confirmAction({
      title: 'Delete this endpoint?',
      message: `Nothing more is posted to ${w.url}, messages still pending included. This cannot be undone.`,
      confirmLabel: 'Delete endpoint',
      danger: true,
    });
    if (!ok) return;
    try {
      await api('DELETE', `/v1/admin/webhooks/${encodeURIComponent(w.webhook_id)}`);
      toast(`Endpoint ${w.webhook_id} deleted.`);
      location.hash = '#/webhooks';
    } catch (e) {
      if (e instanceof ApiError && e.code === 'webhook_not_found') location.hash = '#/webhooks';
      else status.append(errorNotice(e));
    }
  };
  return h('section', { class: 'card', 'aria-labelledby': 'webhook-manage-title' },
    h('h2', { id: 'webhook-manage-title', text: 'Test or delete' }),
    h('p', { text: 'A test posts a webhook.test event to this endpoint alone, signed and retried like any other.' }),
    status,
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'button danger', id: 'webhook-delete', onclick: remove, text: 'Delete endpoint' }),
      h('button', { type: 'button', class: 'button primary', id: 'webhook-test', disabled: w.disabled, onclick: test, text: 'Send a test' })),
    w.disabled ? h('p', { class: 'muted', text: 'A disabled endpoint is sent nothing.' }) : null);
}

function deliveryRow(d) {
  const [label, kind] = d.delivered ? ['Delivered', 'ok'] : d.given_up ? ['Given up', 'bad'] : ['Failed', 'warn'];
  const answer = [
    d.status_code !== null ? h('span', { class: 'mono', text: `HTTP ${d.status_code}` }) : null,
    d.status_code !== null && d.error ? ' · ' : null,
    d.error ? h('span', { class: 'delivery-error', text: d.error }) : null,
  ];
  return h('tr', { 'data-message-id': d.message_id, 'data-attempt': String(d.attempt) },
    h('td', { 'data-label': 'Time' }, timeNode(d.at)),
    h('td', { 'data-label': 'Event' }, h('code', { text: d.event_type })),
    h('td', { 'data-label': 'Attempt', class: 'num', text: String(d.attempt) }),
    h('td', { 'data-label': 'Result' },
      h('span', { class: `badge ${kind}`, text: label }),
      d.next_attempt !== null ? h('div', { class: 'muted' }, 'Next ', timeNode(d.next_attempt)) : null),
    h('td', { 'data-label': 'Answer' }, answer.some(Boolean) ? answer : h('span', { class: 'muted', text: '—' })),
    h('td', { 'data-label': 'Message', class: 'mono muted request', text: d.message_id }));
}
