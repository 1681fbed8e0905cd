// Calls to the API from the console: the session cookie authenticates, the CSRF token from the
// page's <meta> goes in a header on every request that changes something.
const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";

export async function send(method, url, body, contentType = "application/json") {
  const headers = { Accept: "application/json" };
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = contentType;
    payload = typeof body === "string" ? body : JSON.stringify(body);
  }
  if (method !== "GET") headers["X-CSRF-Token"] = csrf();
  const response = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  return { ok: response.ok, status: response.status, data };
}

export const getJson = (url) => send("GET", url);
export const postJson = (url, body) => send("POST", url, body ?? {});

// What went wrong, in words: the API's `detail`, or the status.
export function problem(result) {
  const detail = result.data?.detail;
  return typeof detail === "string" ? detail : `the server answered ${result.status}`;
}
