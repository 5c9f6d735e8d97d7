// mailyard webmail, the compose page: the signature preview under the text
// follows the From field (the identities' sanitised HTML signatures are
// <template class="signature" data-address="..."> elements of the page).
"use strict";
(function () {
  var from = document.getElementById("from");
  var preview = document.getElementById("signature-preview");
  var shown = document.getElementById("signature-shown");
  if (!from || !preview || !shown) { return; }
  function addressOf(value) {
    var m = /<([^<>]*)>\s*$/.exec(value);
    return (m ? m[1] : value).trim().toLowerCase();
  }
  function update() {
    var address = addressOf(from.value), found = null;
    document.querySelectorAll("template.signature").forEach(function (t) {
      if (t.getAttribute("data-address") === address) { found = t; }
    });
    if (found) {
      shown.replaceChildren(found.content.cloneNode(true));
      preview.hidden = false;
    } else {
      shown.replaceChildren();
      preview.hidden = true;
    }
  }
  from.addEventListener("input", update);
  from.addEventListener("change", update);
}());
