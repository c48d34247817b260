// The admin API on this origin, with the admin token from sessionStorage.
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

/**
 * Whether `candidate` is the admin token, without storing it. Asks for a
 * project id that can never exist: the admin check runs first, so the
 * answer is 401 for a wrong token and 404 for the right one.
 */
export async function checkToken(candidate) {
  try {
    await api('GET', '/v1/admin/projects/%21', { bearer: candidate });
    return true;
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return true;
    if (e instanceof ApiError && e.status === 401) return false;
    throw e;
  }
}
