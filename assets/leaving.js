// percache: once the user signs out, the page sends no more requests.
// A form post to /logout clears the session cookie and then navigates to
// /login. Between the two, the page is still alive: a widget poll or the
// live long-poll that htmx starts then goes out without a session, and is
// answered 401 (the console logs an error; htmx follows HX-Redirect to a
// page the browser is already going to). So from the moment the sign-out
// form is submitted, every htmx request is cancelled before it is sent.
// A same-origin script, no inline code: the Content-Security-Policy holds.
(function () {
  "use strict";
  var leaving = false;

  document.addEventListener("submit", function (e) {
    if (e.target instanceof HTMLFormElement && e.target.getAttribute("action") === "/logout") {
      leaving = true;
    }
  });

  // htmx does not send a request whose htmx:beforeRequest is cancelled.
  document.addEventListener("htmx:beforeRequest", function (e) {
    if (leaving) e.preventDefault();
  });
})();
