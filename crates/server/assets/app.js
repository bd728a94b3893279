// logarchive: small enhancements; every page works without them.
"use strict";

(function theme() {
  const saved = localStorage.getItem("theme");
  if (saved) document.documentElement.dataset.theme = saved;
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
    const b = document.getElementById("theme");
    if (!b) return;
    b.addEventListener("click", () => {
      const dark = document.documentElement.dataset.theme === "dark" ||
        (!document.documentElement.dataset.theme && matchMedia("(prefers-color-scheme: dark)").matches);
      const next = dark ? "light" : "dark";
      document.documentElement.dataset.theme = next;
      localStorage.setItem("theme", next);
    });
  });
})();

document.addEventListener("DOMContentLoaded", () => {
  // Confirm removals.
  for (const f of document.querySelectorAll("form.confirm")) {
    f.addEventListener("submit", (e) => { if (!confirm("Remove this user?")) e.preventDefault(); });
  }

  // The search has finished streaming: nothing left to stop.
  const stop = document.getElementById("stop");
  if (stop && document.getElementById("search-stats")) stop.hidden = true;

  const log = document.getElementById("log");
  if (!log) return;

  // Wrap toggle, remembered.
  const wrap = document.getElementById("wrap");
  if (wrap) {
    wrap.checked = localStorage.getItem("wrap") === "1";
    log.classList.toggle("wrap", wrap.checked);
    wrap.addEventListener("change", () => {
      log.classList.toggle("wrap", wrap.checked);
      localStorage.setItem("wrap", wrap.checked ? "1" : "0");
    });
  }

  // Follow: append what the server streams (server-sent events) as lines.
  const follow = document.getElementById("follow");
  if (!follow) return;
  let source = null;
  let nextLine = log.dataset.nextLine ? Number(log.dataset.nextLine) : null;
  const levels = [
    [/\b(ERROR|Error|error|ERR|FATAL|Fatal|fatal|CRITICAL|CRIT|crit|critical|SEVERE|PANIC|panic|EMERG|ALERT)\b/, "lv-error"],
    [/\b(WARN|Warn|warn|WARNING|Warning|warning)\b/, "lv-warn"],
    [/\b(INFO|Info|info|NOTICE|notice)\b/, "lv-info"],
    [/\b(DEBUG|Debug|debug|TRACE|trace|FINE|VERBOSE)\b/, "lv-debug"],
  ];
  function levelOf(line) {
    const head = line.slice(0, 160);
    let best = null, at = Infinity;
    for (const [re, css] of levels) {
      const m = re.exec(head);
      if (m && m.index < at) { at = m.index; best = css; }
    }
    return best;
  }
  function append(text) {
    const lines = text.split("\n");
    if (lines[lines.length - 1] === "") lines.pop();
    const frag = document.createDocumentFragment();
    for (const l of lines) {
      const span = document.createElement("span");
      span.className = "ln";
      const lv = levelOf(l);
      if (lv) span.classList.add(lv);
      if (nextLine !== null) { span.dataset.n = String(nextLine); span.id = "l" + nextLine; nextLine++; }
      span.textContent = l; // text, never HTML
      frag.appendChild(span);
      frag.appendChild(document.createTextNode("\n"));
    }
    log.appendChild(frag);
    window.scrollTo(0, document.body.scrollHeight);
  }
  follow.addEventListener("change", () => {
    if (!follow.checked) { if (source) source.close(); source = null; return; }
    const url = log.dataset.follow + "?offset=" + encodeURIComponent(log.dataset.end);
    source = new EventSource(url);
    source.addEventListener("append", (e) => {
      const d = JSON.parse(e.data);
      append(d.text);
      log.dataset.end = String(d.end);
    });
    source.addEventListener("reset", () => { source.close(); location.reload(); });
    source.onerror = () => {
      // Reconnect from where we are, not from where we started.
      source.close();
      if (follow.checked) setTimeout(() => { follow.checked = false; follow.click(); }, 1000);
    };
  });
});
