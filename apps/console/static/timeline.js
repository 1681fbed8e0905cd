// The run's events, appended as they arrive; each is text, never HTML.
import { timeElement } from "./time.js";

const list = document.getElementById("timeline");

// Invisible format characters (bidi overrides, zero-width ones) as JSON escapes, as the server
// writes them: a bidi override in a title would reverse the rest of the line.
function escaped(character) {
  let text = "";
  for (let i = 0; i < character.length; i++) {
    text += `\\u${character.charCodeAt(i).toString(16).padStart(4, "0")}`;
  }
  return text;
}

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
    data.textContent = JSON.stringify(event.data).replace(/\p{Cf}/gu, escaped);
    item.append(" ", data);
  }
  list.append(item);
}
