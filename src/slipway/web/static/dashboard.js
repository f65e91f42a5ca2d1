// Slipway dashboard: confirmations for state-changing forms and the overview's live refresh.
// Loaded from /ui/static (the pages allow no inline script).
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

function formatNumber(value, digits) {
  if (value === null || value === undefined) return "\u2014";
  if (Number.isInteger(value)) return String(value);
  return Number(value).toPrecision(digits || 3).replace(/\.?0+(e|$)/, "$1");
}

function formatPercent(value) {
  return value === null || value === undefined ? "\u2014" : (100 * value).toFixed(2) + "%";
}

function renderField(name, row) {
  switch (name) {
    case "error_rate": return { text: formatPercent(row.error_rate) };
    case "weights": return { text: row.weights.map(([v, w]) => "v" + v + " " + formatNumber(w) + "%").join(" \u00b7 ") };
    case "split_svg": return { html: row.split_svg };  // built and escaped by the server
    case "drift": return { html: null, text: row.drift, verdict: row.drift };
    default: return { text: formatNumber(row[name]) };
  }
}

async function refresh(table) {
  const response = await fetch(table.dataset.refresh, { credentials: "same-origin", headers: { accept: "application/json" } });
  if (!response.ok) return;
  const data = await response.json();
  for (const row of data.deployments) {
    const tr = table.querySelector('tr[data-deployment="' + CSS.escape(row.name) + '"]');
    if (!tr) continue;
    for (const cell of tr.querySelectorAll("[data-field]")) {
      const value = renderField(cell.dataset.field, row);
      if (value.verdict !== undefined) {
        const span = document.createElement("span");
        span.className = "verdict " + value.verdict;
        span.textContent = value.text;
        cell.replaceChildren(span);
      } else if (value.html) {
        cell.innerHTML = value.html;
      } else {
        cell.textContent = value.text;
      }
    }
  }
  table.dataset.updated = String(data.at);
}

window.addEventListener("DOMContentLoaded", () => {
  const table = document.querySelector("table[data-refresh]");
  if (!table) return;
  const every = Math.max(500, 1000 * Number(table.dataset.interval || 5));
  const tick = () => refresh(table).catch(() => {}).finally(() => setTimeout(tick, every));
  setTimeout(tick, every);
});
