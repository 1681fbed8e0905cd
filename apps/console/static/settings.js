// The settings page's check box: the document goes to POST /config/validate, which changes
// nothing; every problem it finds is listed.
import { send, problem } from "./http.js";

const form = document.getElementById("validate-form");
const result = document.getElementById("validate-result");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const kind = form.elements.kind.value;
  const path = kind ? `/config/validate?kind=${encodeURIComponent(kind)}` : "/config/validate";
  const answer = await send("POST", path, form.elements.document.value, form.elements.format.value);
  result.replaceChildren();
  if (!answer.ok) {
    result.textContent = problem(answer);
    return;
  }
  const heading = document.createElement("p");
  heading.textContent = answer.data.valid ? `A valid ${answer.data.kind} document.` : `Problems in this ${answer.data.kind} document:`;
  const list = document.createElement("ul");
  for (const item of answer.data.problems ?? []) {
    const line = document.createElement("li");
    line.textContent = `${item.location}: ${item.message}`;
    list.append(line);
  }
  result.append(heading, list);
});
