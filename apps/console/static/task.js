// The new-task form: the server checks it (a DAG pasted as JSON or YAML included) and says what
// is wrong next to each field; only a valid task is submitted to POST /tasks.
import { postJson, problem, url } from "./http.js";

const form = document.getElementById("task-form");
const message = document.getElementById("task-message");
const submitButton = form.querySelector('button[type="submit"]');

function showFields() {
  const type = form.elements.type.value;
  for (const field of form.querySelectorAll(".for-demo, .for-report, .for-dag")) {
    field.hidden = !field.classList.contains(`for-${type}`);
  }
}

function showErrors(errors) {
  for (const slot of form.querySelectorAll(".field-error")) slot.textContent = "";
  for (const { field, message: text } of errors) {
    const slot = form.querySelector(`.field-error[data-for="${field}"]`) ?? message;
    slot.textContent = slot.textContent ? `${slot.textContent}; ${text}` : text;
  }
}

function formValues() {
  const values = {};
  for (const element of form.elements) {
    if (element.name && !element.closest("[hidden]") && element.value !== "") {
      values[element.name] = element.type === "number" ? Number(element.value) : element.value;
    }
  }
  values.type = form.elements.type.value;
  return values;
}

// Whether the task was submitted (the page is going to its run).
async function checkThenSubmit() {
  message.textContent = "Checking…";
  const checked = await postJson("/ui/tasks/check", formValues());
  if (!checked.ok) {
    showErrors(checked.data?.errors ?? [{ field: "title", message: problem(checked) }]);
    message.textContent = "Not submitted: fix the fields marked.";
    return false;
  }
  showErrors([]);
  const submitted = await postJson("/tasks", checked.data.task);
  if (submitted.ok) {
    location.assign(url(`/ui/runs/${submitted.data.id}`));
    return true;
  }
  message.textContent = problem(submitted);
  return false;
}

// One submission at a time: a double click, or Enter pressed twice, must not start two runs.
let busy = false;
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (busy) return;
  busy = true;
  submitButton.disabled = true;
  if (!(await checkThenSubmit())) {
    busy = false;
    submitButton.disabled = false;
  }
});

form.elements.type.addEventListener("change", showFields);
showFields();
