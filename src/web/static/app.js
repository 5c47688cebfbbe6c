// The dashboard's entry: sign-in, the hash router (#/batches, #/batches/ID,
// #/new, #/files, #/usage, #/operations) and sign-out. Views are plain sections of
// index.html; each has a controller that fills it and polls while shown.
import { api, onUnauthorized, session } from './api.js';
import { byId } from './dom.js';
import { createBatchView } from './batch-view.js';
import { createBatchesView } from './batches-view.js';
import { createFilesView } from './files-view.js';
import { createNewBatchView } from './new-batch-view.js';
import { createOperationsView } from './operations-view.js';
import { createUsageView } from './usage-view.js';
import { RateTracker } from './rates.js';

const tracker = new RateTracker();
const navigate = (hash) => {
  location.hash = hash;
};

const views = {
  batches: { section: 'batches-view', nav: 'batches', controller: createBatchesView({ tracker }) },
  batch: { section: 'batch-view', nav: 'batches', controller: createBatchView({ tracker }) },
  new: { section: 'new-view', nav: 'new', controller: createNewBatchView({ navigate }) },
  files: { section: 'files-view', nav: 'files', controller: createFilesView() },
  usage: { section: 'usage-view', nav: 'usage', controller: createUsageView({ isAdmin: () => isAdmin }) },
  operations: { section: 'operations-view', nav: 'operations', controller: createOperationsView(), adminOnly: true },
};

let signedIn = false;
let isAdmin = false;

function parseRoute(hash) {
  const path = hash.replace(/^#/, '');
  const detail = /^\/batches\/(.+)$/.exec(path);
  if (detail) return { name: 'batch', params: { id: decodeURIComponent(detail[1]) } };
  const name = path.slice(1);
  return Object.hasOwn(views, name) && name !== 'batch' ? { name, params: {} } : { name: 'batches', params: {} };
}

function hideAll() {
  byId('booting').hidden = true;
  byId('login-view').hidden = true;
  for (const view of Object.values(views)) {
    byId(view.section).hidden = true;
    view.controller.hide();
  }
}

function route({ focus = true } = {}) {
  if (!signedIn) return;
  let { name, params } = parseRoute(location.hash);
  if (views[name].adminOnly && !isAdmin) name = 'batches';
  const view = views[name];
  hideAll();
  const section = byId(view.section);
  section.hidden = false;
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.dataset.view === view.nav) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  view.controller.show(params);
  const heading = section.querySelector('h1');
  document.title = `${heading.textContent} · Spool`;
  // Moving focus to the new view's heading tells screen-reader users the page changed.
  if (focus) heading.focus();
}

function showLogin(message = '') {
  hideAll();
  byId('nav').hidden = true;
  byId('session').hidden = true;
  byId('login-view').hidden = false;
  byId('login-error').textContent = message;
  document.title = 'Sign in · Spool';
  byId('api-key').focus();
}

async function enter(key) {
  // The admin panel is offered only when the status endpoint answers for this key.
  isAdmin = await api.adminStatus({ key }).then(
    () => true,
    () => false,
  );
  signedIn = true;
  byId('nav').hidden = false;
  byId('nav-operations').hidden = !isAdmin;
  byId('session').hidden = false;
  const shown = key.slice(0, Math.min(12, Math.ceil(key.length / 2)));
  byId('whoami').textContent = `Key ${shown}…${isAdmin ? ' (admin)' : ''}`;
  if (!location.hash) history.replaceState(null, '', '#/batches');
  route();
}

function signOut(message = '') {
  session.clear();
  signedIn = false;
  isAdmin = false;
  for (const view of Object.values(views)) view.controller.reset();
  showLogin(message);
}

byId('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = byId('api-key');
  const error = byId('login-error');
  const submit = byId('login-submit');
  const key = input.value.trim();
  if (!key) {
    error.textContent = 'Enter an API key.';
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    return;
  }
  submit.disabled = true;
  error.textContent = '';
  try {
    await api.verifyKey(key);
  } catch (err) {
    error.textContent = err.message;
    input.setAttribute('aria-invalid', 'true');
    input.select();
    submit.disabled = false;
    return;
  }
  session.save(key);
  input.value = '';
  input.removeAttribute('aria-invalid');
  submit.disabled = false;
  await enter(key);
});

byId('logout').addEventListener('click', () => signOut('You are signed out.'));
onUnauthorized((err) => signOut(`Signed out: ${err.message}`));
window.addEventListener('hashchange', () => route());

async function boot() {
  const key = session.key;
  if (!key) return showLogin();
  try {
    await api.verifyKey(key);
  } catch (err) {
    if (err.status === 401) return signOut(err.message);
    return showLogin(`Could not check the saved key: ${err.message}`);
  }
  await enter(key);
}

void boot();
