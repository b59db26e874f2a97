/*
 * Sporeprint front-end glue. htmx does the real work; this file only
 *   (a) sends the CSRF token with every state-changing htmx request, and
 *   (b) renders <time class="js-relative" datetime="..."> as "3 min ago".
 * No framework, no build step: it is served as-is from /static/js/app.js.
 */
(function () {
  "use strict";

  // --- (a) CSRF --------------------------------------------------------------
  // The token is read on every request rather than cached so a page that
  // replaces the <meta> (e.g. after re-login) never sends a stale one.
  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") || "" : "";
  }

  document.addEventListener("htmx:configRequest", function (evt) {
    var verb = String(evt.detail.verb || "get").toUpperCase();
    if (verb !== "GET") {
      evt.detail.headers["X-CSRF-Token"] = csrfToken();
    }
  });

  // --- (b) Relative times ----------------------------------------------------
  function parseDatetime(value) {
    if (!value) return null;
    var s = value.trim().replace(/^(\d{4}-\d{2}-\d{2}) (?=\d)/, "$1T");
    // Browsers read a date-time without an offset as *local* time, but the
    // server writes UTC; an offset-less value is therefore taken as UTC.
    if (/T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(s)) s += "Z";
    // Python emits microseconds; only milliseconds are portable in Date().
    s = s.replace(/(\.\d{3})\d+/, "$1");
    var d = new Date(s);
    return isNaN(d.getTime()) ? null : d;
  }

  function formatRelative(date, now) {
    // Clamp small clock skew between server and browser to "0 s ago".
    var sec = Math.max(0, Math.round((now - date.getTime()) / 1000));
    if (sec < 60) return sec + " s ago";
    var min = Math.floor(sec / 60);
    if (min < 60) return min + " min ago";
    var h = Math.floor(min / 60);
    if (h < 24) return h + " h ago";
    var d = Math.floor(h / 24);
    if (d < 30) return d + " d ago";
    return date.toLocaleDateString();
  }

  function refreshRelativeTimes() {
    var now = Date.now();
    var nodes = document.querySelectorAll("time.js-relative[datetime]");
    for (var i = 0; i < nodes.length; i++) {
      var el = nodes[i];
      var date = parseDatetime(el.getAttribute("datetime"));
      if (!date) continue; // leave the server-rendered text alone
      if (!el.hasAttribute("title")) el.setAttribute("title", date.toLocaleString());
      var text = formatRelative(date, now);
      // Only touch the DOM when the text changes, so screen readers stay quiet.
      if (el.textContent !== text) el.textContent = text;
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", refreshRelativeTimes);
  } else {
    refreshRelativeTimes();
  }
  setInterval(refreshRelativeTimes, 10000);
  // New content arrives via normal swaps, out-of-band swaps and SSE messages.
  ["htmx:afterSwap", "htmx:oobAfterSwap", "htmx:sseMessage"].forEach(function (name) {
    document.addEventListener(name, refreshRelativeTimes);
  });
})();
