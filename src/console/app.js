// keyward admin console: sign-in and the router.
//
// Screens are addressed by the URL fragment, so the server serves one page:
//   #/                          projects
//   #/p/<project>               the project's keys
//   #/p/<project>/keys/<key>    one key
//   #/p/<project>/keys/<key>/usage  the key's usage
//   #/p/<project>/usage         the project's usage
//   #/p/<project>/activity      the project's activity
//   #/p/<project>/audit         the admin log of the project
//   #/audit                     the admin log
//   #/webhooks                  the webhook endpoints
//   #/webhooks/<webhook>        one endpoint and its deliveries

import { ApiError, roleLabel, loadCaller, me, signIn, signOutCaller, token } from './api.js';
import { h, field, errorNotice } from './dom.js';
import { closeDialog } from './dialogs.js';
import { renderProjects } from './projects.js';
import { renderKeys } from './keys.js';
import { renderKey } from './key.js';
import { renderActivity } from './activity.js';
import { renderAudit } from './audit.js';
import { renderProjectUsage, renderKeyUsage } from './usage.js';
import { renderWebhooks, renderWebhook } from './webhooks.js';

const main = document.getElementById('main');
let leaving = [];
let signInMessage = null;

function onLeave(fn) {
  leaving.push(fn);
}

async function route() {
  for (const fn of leaving.splice(0)) fn();
  closeDialog();
  const signedIn = Boolean(token.get());
  for (const id of ['signout', 'nav-projects', 'nav-audit', 'nav-webhooks', 'whoami']) document.getElementById(id).hidden = !signedIn;
  if (!signedIn) {
    renderSignIn();
    return;
  }
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  main.setAttribute('aria-busy', 'true');
  try {
    if (!me()) await loadCaller();
    showCaller();
    if (parts.length === 0) await renderProjects(main);
    else if (parts[0] === 'audit' && parts.length === 1) await renderAudit(main, null);
    else if (parts[0] === 'webhooks' && parts.length === 1) await renderWebhooks(main);
    else if (parts[0] === 'webhooks' && parts.length === 2) await renderWebhook(main, parts[1], onLeave);
    else if (parts[0] === 'p' && parts.length === 2) await renderKeys(main, parts[1]);
    else if (parts[0] === 'p' && parts.length === 3 && parts[2] === 'activity') await renderActivity(main, parts[1], onLeave);
    else if (parts[0] === 'p' && parts.length === 3 && parts[2] === 'audit') await renderAudit(main, parts[1]);
    else if (parts[0] === 'p' && parts.length === 3 && parts[2] === 'usage') await renderProjectUsage(main, parts[1], onLeave);
    else if (parts[0] === 'p' && parts.length === 5 && parts[2] === 'keys' && parts[4] === 'usage') await renderKeyUsage(main, parts[1], parts[3], onLeave);
    else if (parts[0] === 'p' && parts.length === 4 && parts[2] === 'keys') await renderKey(main, parts[1], parts[3]);
    else main.replaceChildren(h('h1', { tabindex: '-1', text: 'Not found' }), h('p', {}, h('a', { href: '#/', text: 'Back to the projects' })));
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      signOut('Your token was refused (revoked or expired?): sign in again.');
      return;
    }
    main.replaceChildren(h('h1', { tabindex: '-1', text: 'Something went wrong' }), errorNotice(e));
  } finally {
    main.removeAttribute('aria-busy');
  }
  main.querySelector('h1')?.focus();
}

// Who is signed in, in the top bar: a name and a role, never the token.
function showCaller() {
  const caller = me();
  const projects = caller.projects.includes('*') ? 'every project' : caller.projects.join(', ');
  document.getElementById('whoami').replaceChildren(
    h('span', { class: 'whoami-name', text: caller.name }),
    h('span', { class: 'badge role', id: 'whoami-role', title: `Projects: ${projects}`, text: roleLabel(caller.role) }));
}

function signOut(message) {
  signOutCaller();
  signInMessage = message;
  if (location.hash && location.hash !== '#/') location.hash = '#/';
  else route();
}

function renderSignIn() {
  const input = h('input', { type: 'password', id: 'token', name: 'token', required: true, autocomplete: 'off', spellcheck: 'false', minlength: '16' });
  const status = h('div', { id: 'signin-status' });
  if (signInMessage) status.append(h('p', { class: 'notice warn', role: 'alert', text: signInMessage }));
  signInMessage = null;
  const button = h('button', { type: 'submit', class: 'button primary', id: 'signin-submit', text: 'Sign in' });
  const form = h('form', {
    class: 'card signin',
    id: 'signin-form',
    'aria-labelledby': 'signin-title',
    onsubmit: async (event) => {
      event.preventDefault();
      status.replaceChildren();
      const candidate = input.value;
      button.disabled = true;
      try {
        if (await signIn(candidate)) {
          input.value = '';
          route();
        } else {
          status.append(h('p', { class: 'notice error', role: 'alert', text: 'This token was refused: it is unknown, revoked or expired. Check it and try again.' }));
          input.select();
        }
      } catch (e) {
        status.append(errorNotice(e));
      } finally {
        button.disabled = false;
      }
    },
  },
  h('h1', { id: 'signin-title', tabindex: '-1', text: 'Sign in' }),
  h('p', { text: 'Enter your operator token (it begins with kwop.) or this keyward\'s KEYWARD_ADMIN_TOKEN.' }),
  field('Operator or admin token', input, 'Kept in this tab only (sessionStorage) and sent only to this server; closing the tab forgets it.'),
  status,
  h('div', { class: 'actions' }, button));
  main.replaceChildren(form);
  input.focus();
}

document.getElementById('signout').addEventListener('click', () => signOut(null));
window.addEventListener('hashchange', route);
route();
