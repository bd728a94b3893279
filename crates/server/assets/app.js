// logarchive: enhancements; every page works without them (links, forms and the server's
// rendering carry the content), these add the theme switch, the viewer's tools, follow, and
// the filters of the browse page.
"use strict";

// The saved theme, before the page is drawn (this script is loaded without `defer` on the
// search page, with `defer` elsewhere: both run before the first paint of the content).
(function () {
  document.documentElement.classList.add("js");
  const saved = localStorage.getItem("theme");
  if (saved) document.documentElement.dataset.theme = saved;
})();

// Search: stop a running content search (closing the connection cancels it on the server).
// Delegated and registered at once: the streamed page is still loading while it matters.
document.addEventListener("click", (e) => {
  const stop = e.target.closest && e.target.closest("#stop");
  if (!stop) return;
  window.stop();
  stop.disabled = true;
  stop.textContent = "Stopped";
});

document.addEventListener("DOMContentLoaded", () => {
  theme();
  for (const f of document.querySelectorAll("form.confirm")) {
    f.addEventListener("submit", (e) => { if (!confirm("Remove this user?")) e.preventDefault(); });
  }
  // The search has finished streaming: nothing left to stop.
  const stop = document.getElementById("stop");
  if (stop && document.getElementById("search-stats")) stop.hidden = true;
  const menu = document.getElementById("menu");
  if (menu) menu.addEventListener("click", () => document.body.classList.toggle("menu-open"));
  filterRows();
  const log = document.getElementById("log");
  if (log) viewer(log);
});

function theme() {
  const b = document.getElementById("theme");
  if (!b) return;
  b.addEventListener("click", () => {
    const root = document.documentElement;
    const dark = root.dataset.theme === "dark" ||
      (!root.dataset.theme && matchMedia("(prefers-color-scheme: dark)").matches);
    const next = dark ? "light" : "dark";
    root.dataset.theme = next;
    localStorage.setItem("theme", next);
  });
}

// Browse: the filter box hides the rows whose name does not contain its text, as one types
// (the server applies the same filter when the form is sent without this script).
function filterRows() {
  const box = document.getElementById("filter");
  const table = document.getElementById("listing");
  if (!box || !table) return;
  const apply = () => {
    const q = box.value.trim().toLowerCase();
    for (const tr of table.tBodies[0].rows) {
      const name = (tr.dataset.name || "").toLowerCase();
      tr.hidden = q !== "" && !name.includes(q);
    }
  };
  box.addEventListener("input", apply);
  apply();
}

// The log viewer: opens at the end, level filter, find, wrap, follow.
function viewer(log) {
  // Opened at the end of the file: show the end, as `tail` would.
  if (log.dataset.openAtEnd === "1" && !location.hash) {
    window.scrollTo(0, document.body.scrollHeight);
  }

  // Wrap: remembered; on by default on narrow screens.
  const wrap = document.getElementById("wrap");
  if (wrap) {
    const saved = localStorage.getItem("wrap");
    wrap.checked = saved === null ? window.innerWidth < 700 : saved === "1";
    log.classList.toggle("wrap", wrap.checked);
    wrap.addEventListener("change", () => {
      log.classList.toggle("wrap", wrap.checked);
      localStorage.setItem("wrap", wrap.checked ? "1" : "0");
    });
  }

  const find = finder(log);
  // Level filter: CSS hides the lines below the level chosen (remembered).
  const level = document.getElementById("level");
  if (level) {
    level.value = localStorage.getItem("level") || "";
    log.dataset.min = level.value;
    level.addEventListener("change", () => {
      log.dataset.min = level.value;
      localStorage.setItem("level", level.value);
      find.refresh();
    });
  }

  follow(log);
}

// Find in the page: marks the lines holding the text, Enter/↓ goes to the next, Shift+Enter/↑
// to the previous; the link beside it searches the whole file on the server.
function finder(log) {
  const box = document.getElementById("find");
  const count = document.getElementById("find-count");
  const all = document.getElementById("find-all");
  let hits = [];
  let at = -1;
  function show() {
    for (const l of log.querySelectorAll(".ln.found-cur")) l.classList.remove("found-cur");
    if (at >= 0 && hits[at]) {
      hits[at].classList.add("found-cur");
      hits[at].scrollIntoView({ block: "center" });
    }
    if (count) count.textContent = box.value ? (hits.length ? `${at + 1} of ${hits.length}` : "none") : "";
  }
  function refresh() {
    if (!box) return;
    const q = box.value.toLowerCase();
    hits = [];
    for (const l of log.querySelectorAll(".ln")) {
      const yes = q !== "" && l.textContent.toLowerCase().includes(q);
      l.classList.toggle("found", yes);
      // Only what the level filter shows.
      if (yes && l.offsetParent !== null) hits.push(l);
    }
    at = hits.length ? 0 : -1;
    if (all) all.href = all.dataset.base + encodeURIComponent(box.value);
    show();
  }
  function step(d) {
    if (!hits.length) return;
    at = (at + d + hits.length) % hits.length;
    show();
  }
  if (box) {
    box.addEventListener("input", refresh);
    box.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); step(e.shiftKey ? -1 : 1); }
    });
    document.getElementById("find-next").addEventListener("click", () => step(1));
    document.getElementById("find-prev").addEventListener("click", () => step(-1));
  }
  return { refresh };
}

// The level a line is filtered by, as the server computes it (view.rs `level_of`).
const LEVELS = [
  [/\b(ERROR|Error|error|ERR|FATAL|Fatal|fatal|CRITICAL|CRIT|crit|critical|SEVERE|PANIC|panic|EMERG|ALERT)\b/, "lv-error", "e"],
  [/\b(WARN|Warn|warn|WARNING|Warning|warning)\b/, "lv-warn", "w"],
  [/\b(INFO|Info|info|NOTICE|notice)\b/, "lv-info", "i"],
  [/\b(DEBUG|Debug|debug|TRACE|trace|FINE|VERBOSE)\b/, "lv-debug", "d"],
];
function levelOf(line) {
  const head = line.slice(0, 160);
  let best = null, at = Infinity;
  for (const l of LEVELS) {
    const m = l[0].exec(head);
    if (m && m.index < at) { at = m.index; best = l; }
  }
  return best;
}

// Follow: append what the server streams (server-sent events) as lines, and say whether the
// stream is live. The view keeps to the end only while the reader is there.
function follow(log) {
  const box = document.getElementById("follow");
  const live = document.getElementById("live");
  if (!box) return;
  let source = null;
  let nextLine = log.dataset.nextLine ? Number(log.dataset.nextLine) : null;
  let inherited = "";
  const last = log.lastElementChild;
  if (last && last.dataset.l) inherited = last.dataset.l;
  function state(text, cls) {
    if (!live) return;
    live.hidden = !text;
    live.textContent = text;
    live.className = "live " + (cls || "");
  }
  function append(text) {
    const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    const lines = text.split("\n");
    if (lines[lines.length - 1] === "") lines.pop();
    const frag = document.createDocumentFragment();
    for (const l of lines) {
      const span = document.createElement("span");
      span.className = "ln";
      const lv = levelOf(l);
      if (lv) { span.classList.add(lv[1]); inherited = lv[2]; }
      if (inherited) span.dataset.l = inherited;
      if (nextLine !== null) { span.dataset.n = String(nextLine); span.id = "l" + nextLine; nextLine++; }
      span.textContent = l + "\n"; // text, never HTML
      frag.appendChild(span);
    }
    log.appendChild(frag);
    if (atBottom) window.scrollTo(0, document.body.scrollHeight);
  }
  function start() {
    const url = log.dataset.follow + "?offset=" + encodeURIComponent(log.dataset.end);
    source = new EventSource(url);
    state("connecting…", "wait");
    source.onopen = () => state("● live", "on");
    source.addEventListener("append", (e) => {
      const d = JSON.parse(e.data);
      append(d.text);
      log.dataset.end = String(d.end);
    });
    source.addEventListener("reset", () => { source.close(); location.reload(); });
    source.onerror = () => {
      // Reconnect from where we are, not from where we started.
      source.close();
      source = null;
      state("reconnecting…", "wait");
      setTimeout(() => { if (box.checked && !source) start(); }, 1000);
    };
  }
  box.addEventListener("change", () => {
    if (box.checked) {
      window.scrollTo(0, document.body.scrollHeight);
      start();
    } else {
      if (source) source.close();
      source = null;
      state("paused", "off");
    }
  });
}
