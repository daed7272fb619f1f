// percache: keeps each card's "updated ... ago" true while the page is open.
// A same-origin script with no inline code, so the Content-Security-Policy
// (script-src 'self') stays as it is. The server renders each card with its
// age in seconds (data-age); this adds the time the card has been on the
// page, so the browser's clock and the server's never need to agree.
(function () {
  "use strict";
  var shownAt = new WeakMap();

  function ago(secs) {
    if (secs < 60) return secs + " s";
    if (secs < 3600) return Math.floor(secs / 60) + " min";
    if (secs < 86400) return Math.floor(secs / 3600) + " h";
    return Math.floor(secs / 86400) + " d";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll(".age[data-age]").forEach(function (el) {
      var since = shownAt.get(el);
      if (since === undefined) {
        since = now;
        shownAt.set(el, since);
      }
      var secs = Number(el.getAttribute("data-age")) + Math.floor((now - since) / 1000);
      var label = el.getAttribute("data-label") || "updated";
      el.textContent = label + " " + ago(secs) + " ago";
    });
  }

  setInterval(tick, 1000);
  document.addEventListener("DOMContentLoaded", tick);
})();
