// A live event stream that survives a dropped connection: it reconnects with Last-Event-ID set
// to the last event it handed on, so the server resumes after it (no gap), and it drops any
// event whose id it has already seen (no duplicate). Read with fetch rather than EventSource so
// that every event type arrives and a 401 (session ended) stops it for good.
import { url } from "./http.js";

// What a page says of its live updates, by the stream's state; "ended" is for good (the session
// ended, or the role may no longer read), so the page no longer looks live when it is not.
const SAID = {
  live: () => "live",
  reconnecting: () => "reconnecting…",
  ended: (status) =>
    status === 401 ? "not live: the session ended, sign in again" : `not live (the server answered ${status})`,
  done: () => "",
};

export function showStateIn(element) {
  return (state, detail) => {
    if (!element) return;
    element.dataset.state = state;
    element.textContent = SAID[state](detail);
  };
}

function parseBlock(block) {
  const event = { id: null, type: "message", data: "" };
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") event.id = value;
    else if (field === "event") event.type = value;
    else if (field === "data") event.data += (event.data ? "\n" : "") + value;
  }
  return event.id === null && !event.data ? null : event;
}

export function follow(path, after, onEvent, { onState = () => {}, isFinal = () => false } = {}) {
  let last = Number(after) || 0;
  let delay = 250;
  let stopped = false;
  let controller = null;

  function handle(block) {
    const parsed = parseBlock(block);
    // Only the run's events have an id. `reconnect`, which ends the stream of a reader that fell
    // behind, is not one of them: the loop below reconnects after the last id anyway.
    if (!parsed || !parsed.data || parsed.id === null) return;
    const id = Number(parsed.id);
    if (id && id <= last) return; // already handed on before a reconnect
    if (id) last = id;
    const event = JSON.parse(parsed.data);
    onEvent(event);
    if (isFinal(event)) stopped = true;
  }

  async function readAll(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        handle(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
      }
    }
  }

  async function run() {
    while (!stopped) {
      controller = new AbortController();
      try {
        const headers = { Accept: "text/event-stream" };
        if (last) headers["Last-Event-ID"] = String(last);
        const response = await fetch(url(path), { headers, signal: controller.signal, credentials: "same-origin" });
        if (response.status === 401 || response.status === 403 || response.status === 404) {
          onState("ended", response.status);
          return;
        }
        if (!response.ok) throw new Error(`stream answered ${response.status}`);
        onState("live");
        delay = 250;
        await readAll(response);
      } catch (error) {
        if (stopped) return;
        onState("reconnecting", error);
      }
      if (stopped) break;
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 5000);
    }
    onState("done");
  }

  run();
  return {
    stop() {
      stopped = true;
      controller?.abort();
    },
    get lastId() {
      return last;
    },
  };
}
