// Talking to the daemon: the access token (from the page's URL or local storage) and every HTTP
// call and URL the page makes with it. No DOM here: the page says what a refused token shows.

const TOKEN_KEY = "livestream.token";

const credentials = { auth: false, token: null, refused: () => {} };

/** Take a token given once in the URL (`/?token=<JWT>`) into local storage, then use the stored one. */
export function loadToken() {
  const params = new URLSearchParams(location.search);
  const fromUrl = params.get("token");
  if (fromUrl) {
    localStorage.setItem(TOKEN_KEY, fromUrl);
    params.delete("token"); // off the address bar; the page's other settings stay
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : "") + location.hash);
  }
  credentials.token = localStorage.getItem(TOKEN_KEY);
}

export function useToken(token) {
  credentials.token = token;
  localStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken() {
  localStorage.removeItem(TOKEN_KEY);
  credentials.token = null;
}

export const hasToken = () => Boolean(credentials.token);

/** Called with a message when the server refuses the token (401 while authentication is on). */
export function whenRefused(handler) {
  credentials.refused = handler;
}

/** What the page must know first (`/api/config`); it says whether a token is needed. */
export async function loadConfig() {
  const config = await (await fetch("/api/config", { cache: "no-store" })).json();
  credentials.auth = config.auth;
  return config;
}

function scopes() {
  if (!credentials.auth) return null; // authentication off: everything is allowed
  try {
    const part = credentials.token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return (JSON.parse(atob(part)).scope || "").split(/\s+/);
  } catch {
    return [];
  }
}

export const allowed = (scope) => scopes() === null || scopes().includes(scope);

/** ``path`` with the token as `?token=`, for what the browser fetches itself (media, sockets). */
export function withToken(path) {
  if (!credentials.token) return path;
  const url = new URL(path, location.href);
  url.searchParams.set("token", credentials.token);
  return url.pathname + url.search;
}

export function socketUrl(path) {
  const url = new URL(path, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

/** The recording WebSocket's subprotocols: the token travels as `bearer.<JWT>`. */
export const recordingProtocols = () =>
  credentials.token ? ["livestream", `bearer.${credentials.token}`] : ["livestream"];

export async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (credentials.token) headers.Authorization = `Bearer ${credentials.token}`;
  const response = await fetch(path, { ...options, headers, cache: "no-store" });
  if (response.status === 401 && credentials.auth) credentials.refused("The token was refused (expired?).");
  return response;
}
