// The keys page: create a key (its secret shown once, with a copy button) or revoke one.
import { postJson, problem } from "./http.js";

const form = document.getElementById("key-form");
const message = document.getElementById("key-message");
const shown = document.getElementById("new-key");
const value = document.getElementById("new-key-value");

const create = form.querySelector('button[type="submit"]');

// One key per submission: a double click would be answered 409 ("already exists") over the
// message that the key was made, while its secret is shown.
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (create.disabled) return;
  create.disabled = true;
  const result = await postJson("/ui/keys", { name: form.elements.name.value, role: form.elements.role.value });
  create.disabled = false;
  if (!result.ok) {
    message.textContent = problem(result);
    return;
  }
  value.textContent = result.data.key;
  shown.hidden = false;
  message.textContent = `Key ${result.data.name} (${result.data.role}) created; reload to see it listed.`;
});

document.getElementById("copy-key").addEventListener("click", async () => {
  await navigator.clipboard.writeText(value.textContent);
  message.textContent = "Copied.";
});

for (const button of document.querySelectorAll('button[data-action="revoke"]')) {
  button.addEventListener("click", async () => {
    const row = button.closest("tr");
    if (!window.confirm(`Revoke the key ${row.dataset.name}? Its requests and sessions end at once.`)) return;
    const result = await postJson("/ui/keys/revoke", { name: row.dataset.name });
    message.textContent = result.ok ? `Revoked ${row.dataset.name}.` : problem(result);
    if (result.ok) {
      row.querySelector(".revoked").textContent = "now";
      button.remove();
    }
  });
}
