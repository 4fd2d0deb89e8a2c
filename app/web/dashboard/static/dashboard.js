// Keeps the dashboard's live part fresh: re-fetches the server-rendered fragment and
// swaps it in. No framework, no build step.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var status = document.getElementById("live-status");
  if (!live) { return; }
  var src = live.getAttribute("data-src");
  var every = Math.max(1, parseInt(live.getAttribute("data-poll"), 10) || 3) * 1000;
  var busy = false;

  function refresh() {
    if (busy || document.hidden) { return; }
    busy = true;
    fetch(src, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); return null; }
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        live.innerHTML = html;
        var count = document.getElementById("open-count");
        document.title = (count && count.textContent !== "0" ? "(" + count.textContent + ") " : "") + "ninjahook";
        status.textContent = "Live: updated " + new Date().toLocaleTimeString() + ".";
        status.classList.remove("stale");
      })
      .catch(function (err) {
        status.textContent = "Live: cannot refresh (" + err.message + "); retrying.";
        status.classList.add("stale");
      })
      .then(function () { busy = false; });
  }

  setInterval(refresh, every);
  document.addEventListener("visibilitychange", refresh);
})();
