// The print view's button (no inline script: the page CSP forbids it).
"use strict";
(function () {
  var button = document.getElementById("print-now");
  if (button) { button.addEventListener("click", function () { window.print(); }); }
})();
