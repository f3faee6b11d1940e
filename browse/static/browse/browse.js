// Image Browser pages: justified rows, infinite scroll, keyboard navigation, drop to search.
// Plain script, no build step; everything it adds to the page goes in as DOM nodes, never HTML text.
"use strict";

(function () {
  const GAP_FALLBACK = 6;

  // --- justified rows ----------------------------------------------------------------
  // Each box keeps its image's aspect ratio (data-w / data-h); rows are scaled to fill the width.
  // A month heading (.month) ends the row before it: rows never straddle two months.
  function justify(grid) {
    const items = Array.from(grid.children).filter(
      (el) => el.classList.contains("box") || el.classList.contains("month"));
    const width = grid.clientWidth;
    if (!width || !items.length) return;
    const style = getComputedStyle(grid);
    const gap = parseFloat(style.columnGap) || GAP_FALLBACK;
    const target = parseFloat(getComputedStyle(document.documentElement).getPropertyValue("--row")) || 220;
    let row = [];
    let ratios = 0;
    const place = (items, sum, height) => {
      for (const [box, ratio] of items) {
        box.style.width = ratio * height + "px";
        box.style.height = height + "px";
      }
    };
    for (const box of items) {
      if (box.classList.contains("month")) {
        place(row, ratios, target);
        row = [];
        ratios = 0;
        continue;
      }
      const ratio = (Number(box.dataset.w) || 1) / (Number(box.dataset.h) || 1);
      row.push([box, ratio]);
      ratios += ratio;
      const free = width - gap * (row.length - 1) - 0.5; // half a pixel against rounding wraps
      if (ratios * target >= free) {
        place(row, ratios, free / ratios);
        row = [];
        ratios = 0;
      }
    }
    place(row, ratios, target); // the last, short row keeps the target height
    grid.classList.add("justified");
  }

  function justifyAll() {
    document.querySelectorAll(".grid").forEach(justify);
  }

  // --- infinite scroll ---------------------------------------------------------------
  // The "Older images" link is a plain link without script; with it, the next page is fetched
  // and its boxes are moved into this grid when the link comes near the viewport. Not before
  // the reader scrolls, though, unless this page leaves the window unfilled: fetching ahead at
  // load doubled what the first screen downloads (docs/benchmarks.md).
  function infiniteScroll() {
    const grid = document.getElementById("grid");
    let more = document.getElementById("more");
    if (!grid || !more || !("IntersectionObserver" in window)) return;
    let busy = false;
    let scrolled = false;
    const fillsWindow = () => document.documentElement.scrollHeight > window.innerHeight + 1;
    const observer = new IntersectionObserver(async (entries) => {
      if (busy || !entries.some((e) => e.isIntersecting)) return;
      if (!scrolled && fillsWindow()) return;
      busy = true;
      try {
        const response = await fetch(more.href, { headers: { Accept: "text/html" } });
        if (!response.ok) throw new Error("HTTP " + response.status);
        const doc = new DOMParser().parseFromString(await response.text(), "text/html");
        const seen = new Set(Array.from(grid.children, (el) => el.dataset.id));
        const months = new Set(Array.from(grid.querySelectorAll(".month"), (el) => el.dataset.month));
        for (const item of doc.querySelectorAll("#grid > .box, #grid > .month")) {
          const known = item.classList.contains("month") ? months.has(item.dataset.month) : seen.has(item.dataset.id);
          if (!known) grid.appendChild(document.adoptNode(item));
        }
        justify(grid);
        const next = doc.getElementById("more");
        if (next) {
          more.href = next.href;
        } else {
          observer.disconnect();
          const end = doc.getElementById("end");
          more.parentElement.replaceWith(end ? document.adoptNode(end) : document.createElement("p"));
          more = null;
        }
      } catch (err) {
        more.textContent = "Could not load more images (" + err.message + "). Click to retry.";
      } finally {
        busy = false;
      }
      // The page may still not fill the screen: look again.
      if (more) { observer.unobserve(more); observer.observe(more); }
    }, { rootMargin: "200px 0px" });
    observer.observe(more);
    window.addEventListener("scroll", () => {
      scrolled = true;
      // Observing anew reports the link's state now, even if it was already near at load.
      if (more) { observer.unobserve(more); observer.observe(more); }
    }, { passive: true, once: true });
  }

  // --- keyboard ----------------------------------------------------------------------
  function keyboard() {
    document.addEventListener("keydown", (event) => {
      const target = event.target;
      if (event.altKey || event.ctrlKey || event.metaKey) return;
      if (target.closest && target.closest("input, textarea, select")) {
        if (event.key === "Escape") target.blur();
        return;
      }
      const go = (id) => {
        const link = document.getElementById(id);
        if (link) { event.preventDefault(); window.location.href = link.href; }
      };
      if (event.key === "ArrowLeft") go("newer");
      else if (event.key === "ArrowRight") go("older");
      else if (event.key === "Escape") go("back");
      else if (event.key === "/") {
        const input = document.querySelector(".search input");
        if (input) { event.preventDefault(); input.focus(); input.select(); }
      }
    });
  }

  // --- search by image: choose or drop --------------------------------------------------
  function upload() {
    const form = document.getElementById("upload");
    if (!form) return;
    const input = document.getElementById("file");
    const zone = document.getElementById("dropzone");
    const error = document.getElementById("upload-error");
    const limit = Number(form.dataset.maxBytes) || Infinity;
    const send = () => {
      const file = input.files && input.files[0];
      if (!file) return;
      if (file.size > limit) {
        error.textContent = "That file is too large (" + Math.ceil(file.size / 1e6) + " MB).";
        error.hidden = false;
        return;
      }
      form.submit();
    };
    input.addEventListener("change", send);
    const over = (on) => (event) => {
      event.preventDefault();
      zone.classList.toggle("over", on);
    };
    for (const name of ["dragenter", "dragover"]) document.addEventListener(name, over(true));
    document.addEventListener("dragleave", over(false));
    document.addEventListener("drop", (event) => {
      over(false)(event);
      if (event.dataTransfer && event.dataTransfer.files.length) {
        input.files = event.dataTransfer.files;
        send();
      }
    });
  }

  // --- filters: leave empty fields out of the URL, so that it stays short and shareable ---
  function filterForm() {
    const form = document.getElementById("filter-form");
    if (!form) return;
    form.addEventListener("submit", () => {
      for (const field of form.elements) {
        if (field.name && !field.value) field.disabled = true;
      }
      // Enabled again for the back button's restored page (bfcache).
      setTimeout(() => { for (const field of form.elements) field.disabled = false; }, 0);
    });
  }

  function start() {
    justifyAll();
    if ("ResizeObserver" in window) {
      let lastWidth = 0;
      new ResizeObserver((entries) => {
        const width = entries[0].contentRect.width;
        if (Math.abs(width - lastWidth) > 1) { lastWidth = width; justifyAll(); }
      }).observe(document.body);
    }
    infiniteScroll();
    document.addEventListener("grid:changed", (event) => justify(event.target)); // live.js
    keyboard();
    upload();
    filterForm();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
