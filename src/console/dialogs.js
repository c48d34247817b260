// The one modal <dialog>: confirmations, forms, and a new key (or another
// secret) shown once.
//
// Whatever a dialog showed is removed from the DOM when it closes (by a
// button, by Escape or by navigating away), so a secret it showed is gone
// from the page the moment the dialog is.

import { h } from './dom.js';

const dialog = () => document.getElementById('dialog');

/** Nodes to put in the dialog, without the nulls of optional parts. */
const present = (nodes) => nodes.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false);

/**
 * Opens the dialog with what `build(ctl)` returns and resolves, once it has
 * closed and been emptied, to the value passed to `ctl.close(value)`
 * (undefined for Escape). `ctl.replace(...nodes)` swaps its content.
 */
export function modal(build) {
  const node = dialog();
  if (node.open) node.close();
  return new Promise((resolve) => {
    let result;
    const ctl = {
      close(value) {
        result = value;
        node.close();
      },
      replace(...nodes) {
        node.replaceChildren(...present(nodes));
        focusFirst(node);
      },
    };
    node.addEventListener('close', () => {
      node.replaceChildren();
      resolve(result);
    }, { once: true });
    node.replaceChildren(...present(build(ctl)));
    node.showModal();
    focusFirst(node);
  });
}

function focusFirst(node) {
  const target = node.querySelector('[autofocus], input, select, textarea, button');
  target?.focus();
}

/** Closes the dialog, if one is open (e.g. when the route changes). */
export function closeDialog() {
  if (dialog().open) dialog().close();
}

/** Asks for a confirmation; resolves to true only for the confirm button. */
export function confirmAction({ title, message, details = [], confirmLabel, danger = false }) {
  return modal((ctl) => [
    h('h2', { id: 'dialog-title', text: title }),
    h('p', { text: message }),
    details.length ? h('ul', { class: 'details' }, details.map((d) => h('li', { text: d }))) : null,
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'button quiet', onclick: () => ctl.close(false), text: 'Cancel' }),
      h('button', {
        type: 'button',
        id: 'confirm-button',
        class: danger ? 'button danger' : 'button primary',
        onclick: () => ctl.close(true),
        text: confirmLabel,
      })),
  ]).then((value) => value === true);
}

/**
 * The content that shows a new key (or another secret: `what` it is, and
 * `why` nobody can show it later) once: a warning, the secret, a copy
 * button and a close button. Closing the dialog removes it.
 */
export function secretView(ctl, { title, secret, note, what = 'key', why = 'keyward stores only its hash, so nobody can show it to you later.' }) {
  const value = h('code', { id: 'secret-value', class: 'secret-value', text: secret });
  const status = h('span', { class: 'copy-status', role: 'status', 'aria-live': 'polite' });
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(value.textContent);
      status.textContent = 'Copied.';
    } catch {
      // No clipboard API (e.g. plain http to a remote host): select it
      // so that the operator can copy it with the keyboard.
      const range = document.createRange();
      range.selectNodeContents(value);
      const selection = getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      status.textContent = 'Selected: press Ctrl+C (or ⌘C) to copy.';
    }
  };
  return [
    h('h2', { id: 'dialog-title', text: title }),
    h('p', { class: 'notice warn' },
      h('strong', { text: `Copy this ${what} now: you will not see it again. ` }),
      why),
    note ? h('p', { text: note }) : null,
    h('div', { class: 'secret' }, value),
    h('div', { class: 'actions' },
      status,
      h('button', { type: 'button', id: 'secret-copy', class: 'button', onclick: copy, text: `Copy ${what}` }),
      h('button', { type: 'button', id: 'secret-close', class: 'button primary', onclick: () => ctl.close(), text: 'I have stored it, close' })),
  ];
}
