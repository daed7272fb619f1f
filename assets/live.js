// percache: the live poll's out-of-band cards never undo what the page shows.
// `/updates` sends every card that differs from what the poll said the page
// showed when it was sent; by the time the answer arrives, the page may
// already show that same version (its own request for the card landed in
// between), or the user may have switched the card to other parameters.
// Swapping then would only replace the card under the user's hand (a select
// they are using, a focus). So an out-of-band card is swapped in only if it
// brings another version of a card shown at its default parameters.
// A same-origin script, no inline code: the Content-Security-Policy holds.
(function () {
  "use strict";

  document.addEventListener("htmx:oobBeforeSwap", function (e) {
    var shown = e.detail.target;
    var fragment = e.detail.fragment;
    var incoming = fragment && fragment.firstElementChild;
    if (!shown || !incoming || !shown.hasAttribute("data-widget")) return;
    var seen = shown.querySelector('input[name="seen"]');
    var pinned = seen && /:-$/.test(seen.value);
    var same = shown.getAttribute("data-version") !== null &&
      shown.getAttribute("data-version") === incoming.getAttribute("data-version") &&
      shown.getAttribute("data-state") === incoming.getAttribute("data-state");
    if (pinned || same) e.detail.shouldSwap = false;
  });
})();
