// The Rampart console's only script (CSP: script-src 'self'). Everything works without it except the
// live view; it adds a search to reference pickers with more rows than fit in the list.
"use strict";

function liveEvents(table) {
  const body = table.tBodies[0];
  const status = document.getElementById("live-status");
  const source = new EventSource(table.dataset.stream);
  const cell = (row, text) => { const td = row.insertCell(); td.textContent = text; return td; };
  source.addEventListener("open", () => { status.textContent = "Connected: new events appear at the top."; });
  source.addEventListener("error", () => { status.textContent = "Reconnecting…"; });
  source.addEventListener("message", (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch (_) { return; }
    const row = body.insertRow(0);
    cell(row, event.occurred_at.replace("T", " ").replace("Z", " UTC").replace(/\.\d+/, ""));
    const type = document.createElement("code");
    type.textContent = event.type;
    row.insertCell().appendChild(type);
    cell(row, event.resource + " " + String(event.resource_id).slice(0, 8));
    cell(row, (event.actor_id || "system").slice(0, 8) + (event.impersonator_id ? " (acted by " + event.impersonator_id.slice(0, 8) + ")" : ""));
    while (body.rows.length > 200) body.deleteRow(-1);
  });
}

function picker(input) {
  const select = document.getElementById(input.dataset.select);
  let timer = null;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const url = "/console/picker/" + encodeURIComponent(input.dataset.picker) + "?q=" + encodeURIComponent(input.value);
      const answer = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!answer.ok) return;
      const { data } = await answer.json();
      const chosen = select.value;
      const keep = Array.from(select.options).filter((o) => o.value === "" || o.value === chosen);
      select.replaceChildren(...keep);
      for (const item of data) {
        if (item.id === chosen) continue;
        select.add(new Option(item.text, item.id));
      }
    }, 250);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live");
  if (live) liveEvents(live);
  document.querySelectorAll("input.picker").forEach(picker);
});
