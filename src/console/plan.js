// Usage plans (issue #23): a key's windows (`limits`) and prepaid
// `credits`, said in words, and edited as form fields by mint and update.

import { h, field } from './dom.js';

const PERS = ['second', 'minute', 'hour', 'day', 'month'];
const MAX_WINDOWS = 8;
const REFILLS = [['', 'No refill'], ['day', 'Every day'], ['month', 'Every month']];

const n = (x) => x.toLocaleString();

/** "10 per second, 50,000 per day"; null for no windows. */
export function describeLimits(limits) {
  return limits.length ? limits.map((l) => `${n(l.limit)} per ${l.per}`).join(', ') : null;
}

/** "480 left, refilled to 500 every day", "480 left", or "unlimited". */
export function describeCredits(credits) {
  if (credits === null) return 'unlimited';
  const { remaining, refill, low_at: lowAt } = credits;
  const left = refill ? `${n(remaining)} left, refilled to ${n(refill.amount)} every ${refill.interval}` : `${n(remaining)} left`;
  return lowAt ? `${left}; key.credits_low below ${n(lowAt)}` : left;
}

/** A typed whole number of at least `min`, or an Error naming `what`. */
function whole(text, min, what) {
  const value = Number(text);
  if (text.trim() === '' || !Number.isSafeInteger(value) || value < min) {
    throw new Error(`${what} must be a whole number of ${n(min)} or more.`);
  }
  return value;
}

/**
 * The windows and credits of a key as form fields, pre-filled from `key`
 * when given. `read(onlyChanged)` gives `{limits, credits}` as the API
 * takes them (`[]` and null clear them), only those edited since the form
 * was built when `onlyChanged`, or throws an Error with a message.
 */
export function planFields(key) {
  const rows = h('div', { class: 'limit-rows' });
  const none = h('p', { class: 'muted', text: 'No windows.' });
  const add = h('button', { type: 'button', name: 'add-limit', class: 'button small', text: 'Add a window' });
  const sync = () => {
    add.disabled = rows.children.length >= MAX_WINDOWS;
    none.hidden = rows.children.length > 0;
  };
  const addRow = (limit) => {
    const value = h('input', { type: 'number', name: 'limit', min: '1', step: '1', required: true, inputmode: 'numeric', 'aria-label': 'Limit', value: limit?.limit ?? '' });
    const per = h('select', { name: 'per', 'aria-label': 'Per' },
      PERS.map((p) => h('option', { value: p, selected: p === limit?.per, text: p })));
    const remove = h('button', { type: 'button', name: 'remove-limit', class: 'button quiet small', text: 'Remove', 'aria-label': 'Remove this window' });
    const row = h('div', { class: 'limit-row' }, value, h('span', { 'aria-hidden': 'true', text: 'per' }), per, remove);
    remove.addEventListener('click', () => {
      row.remove();
      sync();
      add.focus();
    });
    rows.append(row);
    sync();
    return value;
  };
  add.addEventListener('click', () => addRow().focus());
  for (const limit of key?.limits ?? []) addRow(limit);
  sync();

  const credits = key?.credits ?? null;
  const remaining = h('input', { type: 'number', name: 'credits_remaining', min: '0', step: '1', inputmode: 'numeric', value: credits?.remaining ?? '' });
  const interval = h('select', { name: 'refill_interval' },
    REFILLS.map(([value, text]) => h('option', { value, selected: value === (credits?.refill?.interval ?? ''), text })));
  const amount = h('input', { type: 'number', name: 'refill_amount', min: '0', step: '1', inputmode: 'numeric', value: credits?.refill?.amount ?? '' });
  // Carried through every edit, so saving the credits keeps the threshold.
  const lowAt = h('input', { type: 'number', name: 'credits_low_at', min: '1', step: '1', inputmode: 'numeric', value: credits?.low_at ?? '' });
  const noRefill = () => {
    amount.disabled = interval.value === '';
  };
  interval.addEventListener('change', noRefill);
  noRefill();

  const state = {
    limits: () => JSON.stringify([...rows.children].map((row) => [row.querySelector('input').value, row.querySelector('select').value])),
    credits: () => JSON.stringify([remaining.value, interval.value, interval.value && amount.value, lowAt.value]),
  };
  const parse = {
    limits: () => [...rows.children].map((row) => ({
      per: row.querySelector('select').value,
      limit: whole(row.querySelector('input').value, 1, 'Each window\'s limit'),
    })),
    credits: () => {
      if (remaining.value === '') {
        if (interval.value) throw new Error('A refill needs credits: set the credits left, or choose no refill.');
        return null;
      }
      const out = {
        remaining: whole(remaining.value, 0, 'Credits left'),
        refill: interval.value ? { interval: interval.value, amount: whole(amount.value, 0, 'The refill amount') } : null,
      };
      if (lowAt.value !== '') out.low_at = whole(lowAt.value, 1, 'Warn below');
      return out;
    },
  };
  const initial = { limits: state.limits(), credits: state.credits() };

  const nodes = [
    h('fieldset', { class: 'plan' },
      h('legend', { text: 'Windows' }),
      h('p', { class: 'hint', text: `Up to ${MAX_WINDOWS}, on UTC boundaries (a month is the calendar month), each counted apart from the rate limit per minute.` }),
      rows,
      none,
      h('div', { class: 'actions start' }, add)),
    h('fieldset', { class: 'plan' },
      h('legend', { text: 'Credits' }),
      h('div', { class: 'grid three' },
        field('Credits left', remaining, key ? 'Saving sets the balance outright. Empty: unlimited.' : 'Empty: unlimited.'),
        field('Refill', interval),
        field('Refill to', amount, 'At each UTC midnight or 1st of the month.')),
      field('Warn below', lowAt, 'Optional: key.credits_low once per refill interval when the balance falls below it.')),
  ];
  const read = (onlyChanged = false) => {
    const out = {};
    for (const name of ['limits', 'credits']) {
      if (!onlyChanged || state[name]() !== initial[name]) out[name] = parse[name]();
    }
    return out;
  };
  return { nodes, read };
}
