// Prices, numbers and times in the phone's own language and time zone, by the browser's Intl.
// The server writes each one with its machine value (<data value data-currency>, <time
// datetime>) and a text that is already correct without this script ("900.50 EUR",
// "2026-12-01 10:15 UTC"); here that text is replaced by the phone's way of writing it, and the
// server's text stays on hover. Parts re-rendered live (live.js) are handled as they arrive.
(function () {
  "use strict";
  var CURRENCY = /^[A-Z]{3}$/;
  var money = {};
  function moneyFormat(code) {
    if (!money[code]) { money[code] = new Intl.NumberFormat(undefined, {style: "currency", currency: code}); }
    return money[code];
  }
  var plain = new Intl.NumberFormat(undefined, {minimumFractionDigits: 2, maximumFractionDigits: 2});
  var signed = new Intl.NumberFormat(undefined, {minimumFractionDigits: 2, maximumFractionDigits: 2,
                                                 signDisplay: "exceptZero"});
  var moment = new Intl.DateTimeFormat(undefined, {dateStyle: "medium", timeStyle: "short"});
  var date = new Intl.DateTimeFormat(undefined, {dateStyle: "medium", timeZone: "UTC"});

  function show(el, text) {
    if (!el.title) { el.title = el.textContent; }
    el.textContent = text;
    el.setAttribute("data-localised", "1");
  }
  function localise(root) {
    root.querySelectorAll("data.money:not([data-localised])").forEach(function (el) {
      var code = el.getAttribute("data-currency") || "";
      var value = Number(el.getAttribute("value"));
      // a code that is not ISO 4217-shaped (vendor text) keeps the server's text as it is
      if (CURRENCY.test(code) && isFinite(value)) {
        try { show(el, moneyFormat(code).format(value)); } catch (e) { /* unknown code: keep */ }
      }
    });
    root.querySelectorAll("data.number:not([data-localised])").forEach(function (el) {
      var value = Number(el.getAttribute("value"));
      if (isFinite(value)) { show(el, (el.hasAttribute("data-signed") ? signed : plain).format(value)); }
    });
    root.querySelectorAll("time[data-local]:not([data-localised])").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when.getTime())) {
        show(el, (el.getAttribute("data-local") === "date" ? date : moment).format(when));
      }
    });
  }
  window.vrmboxLocalise = localise;
  localise(document);
  new MutationObserver(function (changes) {
    changes.forEach(function (c) {
      c.addedNodes.forEach(function (n) { if (n.nodeType === 1) { localise(n.parentNode || n); } });
    });
  }).observe(document.body, {childList: true, subtree: true});
}());
