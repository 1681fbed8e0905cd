// Calls to the API from the console: the session cookie authenticates, the CSRF token from the
// page's <meta> goes in a header on every request that changes something. Paths are the app's
// own (`/runs/…`); the root path the page names (a proxy's prefix, or nothing) goes before them.
const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? "";
const csrf = () => meta("csrf-token");
const root = meta("root-path");

// The address of the app's `path` as this page was served.
export const url = (path) => `${root}${path}`;

export async function send(method, path, body, contentType = "application/json") {
  const headers = { Accept: "application/json" };
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = contentType;
    payload = typeof body === "string" ? body : JSON.stringify(body);
  }
  if (method !== "GET") headers["X-CSRF-Token"] = csrf();
  let response;
  try {
    response = await fetch(url(path), { method, headers, body: payload, credentials: "same-origin" });
  } catch {
    // The server is down or restarting: an answer the page can show, not a stuck button.
    return { ok: false, status: 0, data: { detail: "the server could not be reached: try again" } };
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  return { ok: response.ok, status: response.status, data };
}

export const getJson = (path) => send("GET", path);
export const postJson = (path, body) => send("POST", path, body ?? {});

// What went wrong, in words: the API's `detail`, or the status.
export function problem(result) {
  const detail = result.data?.detail;
  return typeof detail === "string" ? detail : `the server answered ${result.status}`;
}
