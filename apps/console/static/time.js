// Timestamps in the browser's own time zone: the server writes UTC into <time datetime>.
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

function until(date) {
  const minutes = Math.round((date - Date.now()) / 60000);
  if (Math.abs(minutes) < 90) return relative.format(minutes, "minute");
  return relative.format(Math.round(minutes / 60), "hour");
}

function show(element) {
  const date = new Date(element.getAttribute("datetime"));
  if (Number.isNaN(date.getTime())) return;
  element.title = date.toISOString();
  element.textContent = element.classList.contains("until")
    ? `${until(date)} (${date.toLocaleString()})`
    : date.toLocaleString();
}

export function localize(root = document) {
  root.querySelectorAll("time[datetime]").forEach(show);
}

export function timeElement(iso) {
  const element = document.createElement("time");
  element.setAttribute("datetime", iso);
  show(element);
  return element;
}

localize();
