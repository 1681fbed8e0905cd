// The run's events, appended as they arrive; each is text, never HTML.
import { timeElement } from "./time.js";

const list = document.getElementById("timeline");

export function appendEvent(event) {
  const item = document.createElement("li");
  item.dataset.eventId = String(event.id);
  const id = document.createElement("span");
  id.className = "id";
  id.textContent = `#${event.id}`;
  const type = document.createElement("b");
  type.textContent = event.type;
  item.append(id, " ", timeElement(event.ts), " ", type);
  if (event.data && Object.keys(event.data).length) {
    const data = document.createElement("code");
    data.textContent = JSON.stringify(event.data);
    item.append(" ", data);
  }
  list.append(item);
}
