// Image Browser, live: the open page follows the library without a reload.
// Every few seconds it asks /api/status. The search box turns on (or off) with search, and on
// the library's first page, photos added to the folder appear and removed ones disappear.
// New boxes come from the server's own HTML (parsed, then adopted), never from HTML text here.
"use strict";

(function () {
  const body = document.body;
  const every = Number(body.dataset.livePollMs) || 0;
  if (!every || !window.fetch || !window.DOMParser) return;
  let version = body.dataset.libraryVersion || null;
  let activity = null;

  function showSearch(status) {
    const form = document.querySelector(".search");
    if (!form) return;
    const input = form.querySelector("input");
    const button = form.querySelector("button");
    const on = Boolean(status.search_available);
    input.disabled = !on;
    button.disabled = !on;
    input.placeholder = on ? form.dataset.onPlaceholder : "Search is off";
    if (on) input.removeAttribute("aria-describedby");
    else input.setAttribute("aria-describedby", "search-off");
    const banner = document.getElementById("search-off");
    if (!banner) return;
    banner.hidden = on || (status.warnings || []).includes(status.search_off_reason);
    const why = document.getElementById("search-off-why");
    if (why && !on) why.textContent = status.search_off_summary || "";
  }

  async function fetchPage(url) {
    const response = await fetch(url, { headers: { Accept: "text/html" } });
    if (!response.ok) throw new Error("HTTP " + response.status);
    return new DOMParser().parseFromString(await response.text(), "text/html");
  }

  const isBox = (el) => el.classList.contains("box");
  const gridItems = (grid) => Array.from(grid ? grid.children : []).filter(
    (el) => isBox(el) || el.classList.contains("month"));

  // The first page of the library (within this page's filters) as the server has it now,
  // merged into the grid: boxes already shown are kept (their images stay loaded), new ones
  // adopted, gone ones dropped; the month headings come with the server's page.
  async function refreshGrid(grid) {
    const items = gridItems(grid);
    const shown = items.filter(isBox);
    const max = Number(body.dataset.maxPageSize) || 200;
    const query = new URLSearchParams(window.location.search);
    query.delete("cursor");
    if (shown.length > 0) query.set("limit", String(Math.min(max, shown.length)));
    const doc = await fetchPage("/" + (query.toString() ? "?" + query : ""));
    const fresh = gridItems(doc.getElementById("grid"));
    const freshBoxes = fresh.filter(isBox);
    const key = (el) => (isBox(el) ? "box " + el.dataset.id : "month " + el.dataset.month);
    const kept = new Map(items.map((el) => [key(el), el]));
    const freshIds = new Set(freshBoxes.map((box) => box.dataset.id));
    const head = fresh.map((el) => kept.get(key(el)) || document.adoptNode(el));
    const months = new Set(head.filter((el) => !isBox(el)).map((el) => el.dataset.month));
    // What infinite scroll added beyond the refreshed page stays, less what moved into it.
    const beyond = items.indexOf(shown[freshBoxes.length]);
    const tail = (beyond < 0 ? [] : items.slice(beyond)).filter(
      (el) => (isBox(el) ? !freshIds.has(el.dataset.id) : !months.has(el.dataset.month)));
    const next = head.concat(tail);
    const same = next.length === items.length && next.every((el, i) => el === items[i]);
    if (!same) {
      grid.replaceChildren(...next);
      grid.dispatchEvent(new CustomEvent("grid:changed", { bubbles: true }));
    }
    const more = document.getElementById("more");
    const freshMore = doc.getElementById("more");
    if (more && freshMore && !tail.length) more.href = freshMore.href;
    const summary = document.getElementById("summary");
    const freshSummary = doc.getElementById("summary");
    if (summary && freshSummary) summary.textContent = freshSummary.textContent;
    const empty = document.getElementById("empty");
    if (empty) empty.hidden = next.length > 0;
  }

  // The status page shows counts and progress: it is simply fetched again.
  async function refreshStatus(main) {
    const doc = await fetchPage(window.location.href);
    const fresh = doc.querySelector("main");
    if (fresh) main.replaceChildren(...Array.from(fresh.childNodes, (n) => document.adoptNode(n)));
  }

  async function poll() {
    try {
      const response = await fetch("/api/status", { headers: { Accept: "application/json" } });
      if (response.ok) {
        const status = await response.json();
        showSearch(status);
        const changed = version !== null && status.library_version !== version;
        const working = JSON.stringify((status.activity || []).map((t) => t.line));
        const grid = document.querySelector("#grid[data-live]");
        if (grid && changed) await refreshGrid(grid);
        const statusMain = document.querySelector("main[data-live-status]");
        if (statusMain && version !== null && (changed || working !== activity)) {
          await refreshStatus(statusMain);
        }
        version = status.library_version;
        activity = working;
      }
    } catch (err) {
      // The server may be restarting: try again at the next tick.
    }
    window.setTimeout(poll, document.hidden ? every * 5 : every);
  }

  window.setTimeout(poll, every);
})();
