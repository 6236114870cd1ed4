// Live updates without reloading: the server's /events stream (the box daemon's events as
// server-sent events). Each element with data-live="URL" is re-fetched (server-rendered HTML,
// same origin) when an event arrives. No inline script anywhere: the CSP forbids it.
(function () {
  "use strict";
  var regions = document.querySelectorAll("[data-live]");
  var status = document.getElementById("live-status");
  if (!regions.length || !window.EventSource) { return; }
  var pending = null;
  var generation = 0;
  function refresh() {
    pending = null;
    var mine = ++generation;          // only the newest answer is shown
    regions.forEach(function (el) {
      fetch(el.getAttribute("data-live"), {credentials: "same-origin", headers: {"Accept": "text/html"}})
        .then(function (r) {
          if (r.redirected || r.status === 401) { window.location.href = "/pair"; return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) {
          if (html !== null && html !== undefined && mine === generation) { el.innerHTML = html; }
        })
        .catch(function () {});
    });
  }
  function soon() { if (!pending) { pending = window.setTimeout(refresh, 150); } }
  var source = new EventSource("/events");
  // On (re)connecting, catch up on whatever happened between rendering the page and subscribing.
  var connected = false;
  source.addEventListener("hello", function () {
    if (connected) { soon(); }
    connected = true;
    refresh();
    if (status) { status.textContent = "live"; }
  });
  ["offer", "changed", "agreement_active", "revocation_acknowledged", "vendor_new",
   "vendor_key_changed"].forEach(function (kind) { source.addEventListener(kind, soon); });
  source.addEventListener("unpaired", function () { source.close(); window.location.href = "/pair"; });
  source.addEventListener("down", function () { if (status) { status.textContent = "box off"; } });
  source.onerror = function () { if (status) { status.textContent = "retrying"; } };
}());
