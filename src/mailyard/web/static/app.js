// mailyard webmail: a little plain JavaScript on top of server-rendered pages.
// Everything works without it; it adds select-all, confirmations, keyboard
// shortcuts and live updates (server-sent events from /events).
"use strict";
(function () {
  function $(sel, root) { return (root || document).querySelector(sel); }
  function $$(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  // Phone width: the folder list folds away behind a button.
  var toggle = $("#navtoggle"), nav = $("#nav");
  if (toggle && nav) {
    toggle.addEventListener("click", function () {
      var open = nav.classList.toggle("open");
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
    });
  }

  // Select all.
  document.addEventListener("change", function (e) {
    if (e.target && e.target.id === "select-all") {
      $$("#list input[name=uid]").forEach(function (cb) { cb.checked = e.target.checked; });
    }
  });

  // Attachments over the limit are refused before the upload: the browser
  // will not submit the form while the file input is invalid (the server
  // checks again).
  function sizeText(n) {
    var mb = 1024 * 1024;
    if (n >= mb) { return (Math.round(n / mb * 10) / 10) + " MB"; }
    return (Math.round(n / 1024 * 10) / 10) + " KB";
  }
  document.addEventListener("change", function (e) {
    var input = e.target;
    if (!input || !input.getAttribute || !input.getAttribute("data-max-bytes")) { return; }
    var max = parseInt(input.getAttribute("data-max-bytes"), 10), total = 0;
    Array.prototype.forEach.call(input.files || [], function (f) { total += f.size; });
    var message = total > max ? input.getAttribute("data-too-large").replace("{size}", sizeText(total)) : "";
    input.setCustomValidity(message);
    if (message) { input.reportValidity(); }
  });

  // Confirmation for destructive buttons and forms.
  document.addEventListener("submit", function (e) {
    var form = e.target, btn = e.submitter;
    var text = (btn && btn.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (text && !window.confirm(text)) { e.preventDefault(); }
  });

  // Keyboard: j/k move between messages, Enter/o opens, x selects, c composes,
  // / searches, r replies, u goes back to the list.
  var rows = function () { return $$("#list tr.msg"); };
  var cursor = -1;
  function focusRow(i) {
    var list = rows();
    if (!list.length) { return; }
    cursor = Math.max(0, Math.min(list.length - 1, i));
    list.forEach(function (r) { r.classList.remove("cursor"); });
    var row = list[cursor];
    row.classList.add("cursor");
    var link = $("a.open", row);
    if (link) { link.focus(); }
  }
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) { return; }
    var go = function (sel) { var a = $(sel); if (a) { e.preventDefault(); a.click(); } };
    switch (e.key) {
      case "j": e.preventDefault(); focusRow(cursor + 1); break;
      case "k": e.preventDefault(); focusRow(cursor - 1); break;
      case "x": {
        var row = rows()[cursor];
        if (row) { var cb = $("input[name=uid]", row); cb.checked = !cb.checked; e.preventDefault(); }
        break;
      }
      case "/": { var q = $("#q"); if (q) { e.preventDefault(); q.focus(); } break; }
      case "c": go("#compose-link"); break;
      case "r": go("#reply"); break;
      case "u": go("#back"); break;
      default: break;
    }
  });

  // Live updates: when a folder of ours changes (new mail, flags from IMAP, ...),
  // re-render the message list and the folder counts without a full reload.
  var list = $("#list");
  if (window.EventSource && document.body.getAttribute("data-csrf")) {
    var pending = null;
    var refresh = function () {
      pending = null;
      var url = new URL(window.location.href);
      if (!list) { url = new URL("/box/" + ($("#folder-list a[aria-current]") || {dataset: {}}).dataset.box, window.location.href); }
      url.searchParams.set("fragment", "1");
      url.searchParams.delete("notice");
      if (!list && !/^\/box\/\d+$/.test(url.pathname)) { return; }
      fetch(url.toString(), { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (!data) { return; }
          var navList = $("#nav");
          if (navList) { navList.innerHTML = data.folders; }
          if (data.title) { document.title = data.title; }
          if (list) {
            var checked = $$("#list input[name=uid]:checked").map(function (cb) { return cb.value; });
            list.innerHTML = data.list;
            list.setAttribute("data-modseq", data.modseq);
            checked.forEach(function (v) {
              var cb = $("#list input[name=uid][value='" + v.replace(/[^0-9]/g, "") + "']");
              if (cb) { cb.checked = true; }
            });
            document.dispatchEvent(new CustomEvent("mailyard:refreshed"));
          }
        })
        .catch(function () {});
    };
    var source = new EventSource("/events");
    source.addEventListener("change", function () {
      if (!pending) { pending = window.setTimeout(refresh, 150); }
    });
    window.addEventListener("beforeunload", function () { source.close(); });
  }
})();

// Size the message body frame to its content (it is same-origin, script-free).
(function () {
  var frame = document.getElementById("body-frame");
  if (!frame) { return; }
  var fit = function () {
    try {
      var doc = frame.contentDocument;
      if (doc && doc.body) {
        var h = doc.body.scrollHeight;  // the content, not the frame's viewport
        frame.style.height = Math.max(160, Math.min(h + 32, 20000)) + "px";
      }
    } catch (e) { /* keep the CSS height */ }
  };
  frame.addEventListener("load", fit);
  if (frame.contentDocument && frame.contentDocument.readyState === "complete") { fit(); }
})();

// conversations: size every message frame of a conversation to its content,
// also when a collapsed message is opened (its frame loads lazily then).
(function () {
  var fit = function (frame) {
    try {
      var doc = frame.contentDocument;
      if (doc && doc.body) {
        frame.style.height = Math.max(120, Math.min(doc.body.scrollHeight + 32, 20000)) + "px";
      }
    } catch (e) { /* keep the CSS height */ }
  };
  Array.prototype.forEach.call(document.querySelectorAll("iframe.body.fit"), function (frame) {
    frame.addEventListener("load", function () { fit(frame); });
    if (frame.contentDocument && frame.contentDocument.readyState === "complete") { fit(frame); }
  });
  document.addEventListener("toggle", function (e) {
    var frame = e.target && e.target.querySelector && e.target.querySelector("iframe.body.fit");
    if (frame && e.target.open) { fit(frame); }
  }, true);
})();
