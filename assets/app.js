// greenlight review page: counts each pending request's expiry down, once a second.
// Elements: <time class="countdown" datetime="RFC 3339">; their text is replaced.
(function () {
  "use strict";
  function left(ms) {
    if (ms <= 0) return "expired";
    var s = Math.floor(ms / 1000), d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24,
        m = Math.floor(s / 60) % 60, r = s % 60;
    if (d > 0) return "expires in " + d + "d " + h + "h";
    if (h > 0) return "expires in " + h + "h " + m + "m";
    if (m > 0) return "expires in " + m + "m " + r + "s";
    return "expires in " + r + "s";
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("time.countdown").forEach(function (el) {
      var at = Date.parse(el.getAttribute("datetime"));
      if (!isNaN(at)) el.textContent = left(at - now);
    });
  }
  document.addEventListener("DOMContentLoaded", tick);
  document.addEventListener("htmx:afterSwap", tick);
  setInterval(tick, 1000);
})();
