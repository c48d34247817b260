// One key: its details, plan and usage (per day: the Usage tab, usage.js), and (from the key_manager role on)
// add credits, and update, rotate and revoke, each behind a confirmation.

import { api, ApiError, allows } from './api.js';
import { h, field, timeNode, relative, pageHead, projectHref, keyTabs, keyBadges, errorNotice, toast } from './dom.js';
import { confirmAction, modal, secretView } from './dialogs.js';
import { keyFields } from './keys.js';
import { loadProject } from './projects.js';
import { describeCredits, describeLimits } from './plan.js';

const FIELD_LABELS = {
  owner: 'owner',
  server_name: 'server name',
  scopes: 'scopes',
  rate_limit_per_minute: 'rate limit',
  expires_at: 'expiry',
  allowed_cidrs: 'allowed networks',
  metadata: 'metadata',
  limits: 'windows',
  credits: 'credits',
};

export async function renderKey(main, projectId, keyId) {
  let key;
  try {
    key = await api('GET', '/v1/get-key', { query: { project_id: projectId, key_id: keyId } });
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 404) throw e;
    main.replaceChildren(
      pageHead([['Projects', '#/'], [projectId, projectHref(projectId)], [keyId]], keyId),
      errorNotice({ message: `No key ${keyId} in project ${projectId} that this deployment may read.` }),
    );
    return;
  }
  const project = await loadProject(projectId);
  const rerender = () => renderKey(main, projectId, keyId);
  const now = Date.now() / 1000;
  const inRotation = !key.disabled && key.previous_expires_at !== null && key.previous_expires_at > now;

  main.replaceChildren(
    pageHead([['Projects', '#/'], [project?.label ?? projectId, projectHref(projectId)], [keyId]], [h('span', { class: 'mono-title', text: keyId }), ' ', keyBadges(key)]),
    keyTabs(projectId, keyId, 'key'),
    h('div', { class: 'grid two' },
      detailsCard(projectId, key, inRotation, rerender),
      usageCard(key)),
    ...(allows('key_manager') ? [
      updateCard(projectId, key, rerender),
      h('div', { class: 'grid two' },
        rotateCard(projectId, key, rerender),
        revokeCard(projectId, key, rerender)),
    ] : []),
  );
}

function detailsCard(projectId, key, inRotation, rerender) {
  const row = (label, value) => [h('dt', { text: label }), h('dd', {}, value)];
  const none = (text) => h('span', { class: 'muted', text });
  return h('section', { class: 'card', 'aria-labelledby': 'details-title' },
    h('h2', { id: 'details-title', text: 'Details' }),
    h('dl', { class: 'facts', id: 'key-details' },
      row('Project', h('span', { class: 'mono', text: projectId })),
      row('Owner', key.owner),
      row('Server name', key.server_name || none('—')),
      row('Scopes', key.scopes.length ? h('span', { class: 'chips' }, key.scopes.map((s) => h('code', { class: 'chip', text: s }))) : none('none')),
      row('Rate limit', key.rate_limit_per_minute === null ? none('deployment default') : `${key.rate_limit_per_minute.toLocaleString()} per minute`),
      row('Windows', h('span', { id: 'key-limits' }, describeLimits(key.limits) ?? none('none'))),
      row('Credits', h('span', { class: 'with-action' },
        h('span', { id: 'key-credits', class: key.credits ? null : 'muted', text: describeCredits(key.credits) }),
        key.credits && allows('key_manager') ? h('button', {
          type: 'button',
          id: 'add-credits-open',
          class: 'button small',
          text: 'Add credits',
          onclick: async () => {
            if (await addCreditsDialog(projectId, key)) await rerender();
          },
        }) : null)),
      row('Allowed networks', key.allowed_cidrs ? h('span', { class: 'chips' }, key.allowed_cidrs.map((c) => h('code', { class: 'chip', text: c }))) : none('anywhere')),
      row('Expires', key.expires_at ? timeNode(key.expires_at) : none('never')),
      row('Created', timeNode(key.created_at)),
      row('Updated', key.updated_at ? timeNode(key.updated_at) : none('never')),
      inRotation ? row('Previous secret valid until', timeNode(key.previous_expires_at)) : null,
      row('Metadata', key.metadata === null ? none('none') : h('pre', { class: 'json', text: JSON.stringify(key.metadata, null, 2) }))));
}

function usageCard(key) {
  return h('section', { class: 'card', 'aria-labelledby': 'usage-title' },
    h('h2', { id: 'usage-title', text: 'Usage' }),
    h('div', { class: 'stats' },
      h('div', { class: 'stat' }, h('span', { class: 'stat-value', id: 'usage-count', text: key.usage_count.toLocaleString() }), h('span', { class: 'stat-label', text: 'successful validations' })),
      h('div', { class: 'stat' },
        h('span', { class: 'stat-value small', text: key.last_used ? relative(key.last_used) : 'never' }),
        h('span', { class: 'stat-label', text: 'last used' }),
        key.last_used ? h('span', { class: 'stat-label' }, timeNode(key.last_used)) : null)),
    h('p', { class: 'muted', text: 'Counts successful validations only; the Usage tab shows spend and refusals per day.' }));
}

function updateCard(projectId, key, rerender) {
  const { nodes, read } = keyFields(key);
  const status = h('div');
  return h('form', {
    class: 'card',
    id: 'update-form',
    'aria-labelledby': 'update-title',
    onsubmit: async (event) => {
      event.preventDefault();
      status.replaceChildren();
      let changes;
      try {
        changes = read(true);
      } catch (e) {
        status.append(errorNotice(e));
        return;
      }
      const names = Object.keys(changes);
      if (names.length === 0) {
        status.append(h('p', { class: 'notice', role: 'status', text: 'Nothing changed.' }));
        return;
      }
      const ok = await confirmAction({
        title: 'Update this key?',
        message: `The change applies to ${key.key_id} from its next validation on.`,
        details: names.map((n) => `Change the ${FIELD_LABELS[n]}`),
        confirmLabel: 'Update key',
      });
      if (!ok) return;
      try {
        await api('POST', '/v1/update-key', { body: { project_id: projectId, key_id: key.key_id, ...changes } });
        toast(`Key ${key.key_id} updated.`);
        await rerender();
      } catch (e) {
        status.append(errorNotice(e));
      }
    },
  },
  h('h2', { id: 'update-title', text: 'Edit' }),
  h('p', { class: 'muted', text: 'Changes only what you edit; the secret, usage and status stay as they are.' }),
  ...nodes,
  status,
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'button primary', id: 'update-submit', text: 'Save changes' })));
}

/** The add-credits dialog; resolves to true if the balance changed. */
function addCreditsDialog(projectId, key) {
  let changed = false;
  return modal((ctl) => {
    const amount = h('input', { type: 'number', name: 'amount', step: '1', required: true, inputmode: 'numeric' });
    const balance = h('span', { id: 'credits-balance', text: describeCredits(key.credits) });
    const status = h('div', { id: 'add-credits-status' });
    const close = h('button', { type: 'button', id: 'add-credits-close', class: 'button quiet', onclick: () => ctl.close(), text: 'Cancel' });
    const form = h('form', {
      id: 'add-credits-form',
      onsubmit: async (event) => {
        event.preventDefault();
        status.replaceChildren();
        const value = Number(amount.value);
        if (!Number.isSafeInteger(value) || value === 0) {
          status.append(errorNotice({ message: 'The amount must be a whole number other than 0.' }));
          return;
        }
        try {
          const out = await api('POST', '/v1/add-credits', { body: { project_id: projectId, key_id: key.key_id, amount: value } });
          changed = true;
          const credits = { ...key.credits, remaining: out.remaining };
          balance.textContent = describeCredits(credits);
          const done = value > 0 ? `Added ${value.toLocaleString()}` : `Took away ${(-value).toLocaleString()}`;
          status.append(h('p', { class: 'notice info', role: 'status', text: `${done}: ${out.remaining.toLocaleString()} left now.` }));
          amount.value = '';
          close.textContent = 'Close';
          toast(`Key ${key.key_id}: ${out.remaining.toLocaleString()} credits left.`);
        } catch (e) {
          status.append(errorNotice(e));
        }
      },
    },
    h('p', {}, 'Credits: ', balance, '.'),
    field('Amount', amount, key.credits.refill
      ? 'Negative to take credits away. Changes the balance until the next refill.'
      : 'Negative to take credits away.'),
    status,
    h('div', { class: 'actions' },
      close,
      h('button', { type: 'submit', class: 'button primary', id: 'add-credits-submit', text: 'Add credits' })));
    return [h('h2', { id: 'dialog-title', text: `Add credits to ${key.key_id}` }), form];
  }).then(() => changed);
}

function rotateCard(projectId, key, rerender) {
  const grace = h('input', { type: 'number', min: '0', max: '604800', step: '1', value: '86400', inputmode: 'numeric' });
  const status = h('div');
  return h('form', {
    class: 'card',
    id: 'rotate-form',
    'aria-labelledby': 'rotate-title',
    onsubmit: async (event) => {
      event.preventDefault();
      status.replaceChildren();
      const seconds = Number(grace.value);
      const ok = await confirmAction({
        title: 'Rotate this key?',
        message: `${key.key_id} gets a new secret. The current one keeps working for ${seconds.toLocaleString()} seconds, then stops.`,
        confirmLabel: 'Rotate key',
      });
      if (!ok) return;
      try {
        const out = await api('POST', '/v1/rotate-key', { body: { project_id: projectId, key_id: key.key_id, grace_seconds: seconds } });
        toast(`Key ${key.key_id} rotated.`);
        await modal((ctl) => secretView(ctl, {
          title: `New secret for ${out.key_id}`,
          secret: out.api_key,
          note: 'The previous key keeps validating until its grace period ends.',
        }));
        await rerender();
      } catch (e) {
        status.append(errorNotice(e));
      }
    },
  },
  h('h2', { id: 'rotate-title', text: 'Rotate' }),
  h('p', { text: 'Give the key a new secret and keep its id, limits and history.' }),
  field('Grace period for the current secret (seconds)', grace, 'At most 604800 (a week); 0 stops it at once.'),
  status,
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'button', id: 'rotate-submit', disabled: key.disabled, text: 'Rotate key' })),
  key.disabled ? h('p', { class: 'muted', text: 'A revoked key cannot be rotated.' }) : null);
}

function revokeCard(projectId, key, rerender) {
  const status = h('div');
  const revoke = async () => {
    status.replaceChildren();
    const ok = await confirmAction({
      title: 'Revoke this key?',
      message: `${key.key_id} (owner ${key.owner}) stops validating at once, both secrets if it is in rotation. This cannot be undone.`,
      confirmLabel: 'Revoke key',
      danger: true,
    });
    if (!ok) return;
    try {
      await api('POST', '/v1/revoke-key', { body: { project_id: projectId, key_id: key.key_id } });
      toast(`Key ${key.key_id} revoked.`);
      await rerender();
    } catch (e) {
      status.append(errorNotice(e));
    }
  };
  return h('section', { class: 'card danger-zone', 'aria-labelledby': 'revoke-title' },
    h('h2', { id: 'revoke-title', text: 'Revoke' }),
    key.disabled
      ? h('p', { text: 'This key is revoked: every validation of it is refused.' })
      : h('p', { text: 'Refuse every validation of this key from now on.' }),
    status,
    h('div', { class: 'actions' }, h('button', { type: 'button', class: 'button danger', id: 'revoke-submit', disabled: key.disabled, onclick: revoke, text: 'Revoke key' })));
}
