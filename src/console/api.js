// The admin API on this origin, with the bearer token from sessionStorage
// (an operator token, or the deployment's KEYWARD_ADMIN_TOKEN), and who
// that token is (GET /v1/admin/whoami).
//
// The token lives in sessionStorage only: it is never put in a URL, a cookie
// or localStorage, and it is gone when the tab is closed.

const TOKEN_KEY = 'keyward.adminToken';

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** An error answer of the API: its status, `code` and `message`. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * Calls the API. `query` values that are null or undefined are left out;
 * `body` is sent as JSON. Resolves to the JSON answer, or throws ApiError.
 */
export async function api(method, path, { query, body, bearer } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== null && value !== undefined) url.searchParams.set(name, value);
  }
  const headers = { Authorization: `Bearer ${bearer ?? token.get() ?? ''}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
    });
  } catch {
    throw new ApiError(0, 'network', 'keyward could not be reached.');
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    // Not JSON: described by the status below.
  }
  if (!response.ok) {
    const error = data?.error;
    throw new ApiError(
      response.status,
      error?.code ?? `http_${response.status}`,
      error?.message ?? `${response.status} ${response.statusText}`,
    );
  }
  return data;
}

// Who the stored token is: {operator_id, name, role, projects}, read
// once per page load. Never holds the token.
let caller = null;

/** The caller, once `loadCaller` or `signIn` has read it; else null. */
export const me = () => caller;

// What this keyward offers (GET /v1/admin/catalog): its roles, least
// first, and its webhook event types, read with the caller.
let offered = { roles: [], event_types: [] };

/** The catalog, once `loadCaller` or `signIn` has read it. */
export const catalog = () => offered;

/** Reads who the stored token is; throws ApiError (401 for a refused token). */
export async function loadCaller() {
  caller = await api('GET', '/v1/admin/whoami');
  offered = await api('GET', '/v1/admin/catalog');
  return caller;
}

/**
 * Signs in with `candidate` if keyward knows it: stores it and resolves to
 * the caller, or to null (nothing stored) when it is refused.
 */
export async function signIn(candidate) {
  try {
    caller = await api('GET', '/v1/admin/whoami', { bearer: candidate });
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return null;
    throw e;
  }
  token.set(candidate);
  offered = await api('GET', '/v1/admin/catalog');
  return caller;
}

export function signOutCaller() {
  caller = null;
  token.clear();
}

/** A role's name for people: `key_manager` is "Key manager". */
export function roleLabel(role) {
  const words = role.replaceAll('_', ' ');
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/**
 * Whether the caller's role includes `role`. Only decides what the console
 * shows: the server decides what the token may do.
 */
export function allows(role) {
  // Each role includes the ones before it in the catalog.
  const roles = offered.roles;
  return caller !== null && roles.includes(role) && roles.indexOf(caller.role) >= roles.indexOf(role);
}

/** Whether the caller covers every project (an owner, or `["*"]`). */
export function coversAll() {
  return caller !== null && (caller.role === 'owner' || caller.projects.includes('*'));
}
