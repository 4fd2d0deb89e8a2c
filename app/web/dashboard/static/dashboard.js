// Shows times in the viewer's time zone, and keeps the dashboard's live part fresh:
// re-fetches the server-rendered fragment and swaps it in. No framework, no build step.
(function () {
  "use strict";

  // Times are rendered as <time datetime="…Z"> with UTC text (the fallback without
  // script); shown here in the viewer's time zone. A "local" time gets new text (the
  // UTC text moves to its title); any other <time> (an age) gets the local time as its
  // title, after its data-title prefix.
  var timeFormat = { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
    minute: "2-digit", second: "2-digit", hour12: false, timeZoneName: "short" };

  function localize(root) {
    var times = root.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var el = times[i];
      if (el.hasAttribute("data-local")) { continue; }
      var at = new Date(el.getAttribute("datetime"));
      if (isNaN(at.getTime())) { continue; }
      var text = at.toLocaleString(undefined, timeFormat);
      if (el.classList.contains("local")) {
        el.title = el.textContent;
        el.textContent = text;
      } else {
        el.title = (el.getAttribute("data-title") || "") + text;
      }
      el.setAttribute("data-local", "");
    }
  }

  localize(document);

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
        localize(live);
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
