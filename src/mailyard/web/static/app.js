// mailyard webmail: a little plain JavaScript on top of server-rendered pages.
// Everything works without it; it adds select-all, confirmations, keyboard
// shortcuts and live updates (server-sent events from /events).
"use strict";
(function () {
  // Size a message body frame to its content (it is same-origin, script-free).
  function fitFrame(frame) {
    var fit = function () {
      try {
        var doc = frame.contentDocument;
        if (doc && doc.body) {
          var h = doc.body.scrollHeight;  // the content, not the frame's viewport
          frame.style.height = Math.max(160, Math.min(h + 32, 20000)) + "px";
        }
      } catch (err) { /* keep the CSS height */ }
    };
    // the frame's own document takes the focus (Tab, a click): no :focus
    // on the frame in the page, so a class shows where the focus is
    var watch = function () {
      try {
        var win = frame.contentWindow;
        win.addEventListener("focus", function () { frame.classList.add("focused"); });
        win.addEventListener("blur", function () { frame.classList.remove("focused"); });
      } catch (err) { /* not ours to watch */ }
    };
    frame.addEventListener("load", function () { fit(); watch(); });
    if (frame.contentDocument && frame.contentDocument.readyState === "complete") { fit(); watch(); }
  }
  function $(sel, root) { return (root || document).querySelector(sel); }
  function $$(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  $$("iframe.body").forEach(fitFrame);

  // Phone width: the folder list folds away behind a button.
  var toggle = $("#navtoggle"), nav = $("#nav");
  if (toggle && nav) {
    toggle.addEventListener("click", function () {
      var open = nav.classList.toggle("open");
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
    });
  }

  // Select all (hidden without this script, which it needs).
  var selectAll = $("#select-all");
  if (selectAll) { selectAll.closest(".selall").hidden = false; }
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

  // Menus that fold away on small screens (account menu, "More" actions):
  // a button with aria-controls toggles the element's "open" class.
  document.documentElement.classList.add("js");
  function closeMenus(except) {
    $$(".menutoggle[aria-expanded=true], .moretoggle[aria-expanded=true]").forEach(function (b) {
      if (b === except) { return; }
      b.setAttribute("aria-expanded", "false");
      var m = document.getElementById(b.getAttribute("aria-controls"));
      if (m) { m.classList.remove("open"); }
    });
  }
  document.addEventListener("click", function (e) {
    var b = e.target.closest ? e.target.closest(".menutoggle, .moretoggle") : null;
    if (!b) {
      if (!(e.target.closest && e.target.closest(".menu, .more-items"))) { closeMenus(null); }
      return;
    }
    closeMenus(b);
    var m = document.getElementById(b.getAttribute("aria-controls"));
    if (!m) { return; }
    var open = m.classList.toggle("open");
    b.setAttribute("aria-expanded", open ? "true" : "false");
    if (open) { var first = $("button, select, a, input", m); if (first) { first.focus(); } }
  });

  // Keyboard shortcuts (listed in the help overlay, #help): never while
  // typing in a field. Message actions press the page's own buttons, so they
  // go through the same forms (and CSRF token) as a click.
  var help = $("#help");
  var helpReturn = null;
  var helpOpen = $("#help-open");
  if (help && helpOpen) { helpOpen.hidden = false; }  // hidden without this script, which the shortcuts need
  function showHelp(show) {
    if (!help) { return; }
    if (show) {
      helpReturn = document.activeElement;
      help.hidden = false;
      $("#help-close").focus();
    } else {
      help.hidden = true;
      if (helpReturn && helpReturn.focus) { helpReturn.focus(); }
    }
  }
  document.addEventListener("click", function (e) {
    var id = e.target && e.target.id;
    if (id === "help-open") { closeMenus(null); showHelp(true); }
    else if (id === "help-close" || e.target === help) { showHelp(false); }
  });

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
  function cursorRow() {
    var list = rows();
    return cursor >= 0 && cursor < list.length ? list[cursor] : null;
  }
  function typing(t) {
    return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
  }
  // The element a message shortcut presses: in the reading pane or on the
  // message page, its own buttons; on a list, the list's buttons for the
  // selected messages (the cursor's message when none is selected).
  function actionFor(key) {
    var listForm = $("#list-form");
    var selected = $$("#list input[name=uid]:checked");
    var row = cursorRow();
    var pane = $("#pane article.read");
    if (pane && row && row.getAttribute("data-uid") !== paneUid) { pane = null; }  // the cursor moved on
    var scope = selected.length ? null : (pane || $("main > article.read"));
    if (scope) { return $("[data-key='" + key + "']", scope); }
    if (!listForm) { return null; }
    if (key === "r" || key === "a" || key === "f") {
      if (!row) { return null; }
      var mode = { r: "reply", a: "replyall", f: "forward" }[key];
      return { click: function () {
        window.location.href = "/compose?" + mode + "=" + $("#list").getAttribute("data-box") + ":" + row.getAttribute("data-uid");
      } };
    }
    if (!selected.length) {
      if (!row) { return null; }
      $("input[name=uid]", row).checked = true;
    }
    return $("[data-key='" + key + "']", listForm);
  }
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (help && !help.hidden) {
      if (e.key === "Escape" || e.key === "?") { e.preventDefault(); showHelp(false); }
      else if (e.key === "Tab") { e.preventDefault(); $("#help-close").focus(); }
      return;
    }
    if (e.key === "Escape") {
      // a menu that folds away with the focus inside gives it back to its button
      var inMenu = t && t.closest ? t.closest(".menu, .more-items") : null;
      var owner = inMenu && $("[aria-controls='" + inMenu.id + "'][aria-expanded=true]");
      closeMenus(null);
      if (owner) { owner.focus(); }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey || typing(t)) { return; }
    var press = function (el) { if (el) { e.preventDefault(); el.click(); } };
    switch (e.key) {
      case "j": e.preventDefault(); focusRow(cursor + 1); break;
      case "k": e.preventDefault(); focusRow(cursor - 1); break;
      case "o": case "Enter": {
        var row = cursorRow();
        // Enter on a link or button does what it always does
        if (row && !(e.key === "Enter" && t && (t.tagName === "A" || t.tagName === "BUTTON"))) {
          press($("a.open", row));
        }
        break;
      }
      case "x": {
        var r = cursorRow();
        if (r) { var cb = $("input[name=uid]", r); cb.checked = !cb.checked; e.preventDefault(); }
        break;
      }
      case "/": { var q = $("#q"); if (q) { e.preventDefault(); q.focus(); } break; }
      case "?": e.preventDefault(); showHelp(true); break;
      case "c": press($("#compose-link")); break;
      case "u": press($("main > article.read [data-key='u']")); break;
      case "z": press($("#undo-move")); break;
      case "r": case "a": case "f": case "e": case "#": case "!": press(actionFor(e.key)); break;
      default: break;
    }
  });

  // Three panes (wide screens): a message opens in the reading pane next to
  // the list. The link still leads to the message page without scripts, on
  // narrow screens, and with a modifier key (new tab).
  var pane = $("#pane");
  var paneUid = null;
  function paneShown() { return pane && window.getComputedStyle(pane).display !== "none"; }
  function markCurrent() {
    rows().forEach(function (r) {
      var on = r.getAttribute("data-uid") === paneUid;
      r.classList.toggle("current", on);
      var a = $("a.open", r);
      if (a) { if (on) { a.setAttribute("aria-current", "true"); } else { a.removeAttribute("aria-current"); } }
    });
  }
  function openInPane(href, row) {
    fetch(href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        var doc = html && new DOMParser().parseFromString(html, "text/html");
        var article = doc && doc.querySelector("article.read");
        if (!article) { window.location.href = href; return; }
        // ids stay unique on the page: the pane's copies get a prefix
        $$("[id]", article).forEach(function (el) { el.id = "pane-" + el.id; });
        ["for", "aria-controls", "aria-labelledby"].forEach(function (attr) {
          $$("[" + attr + "]", article).forEach(function (el) { el.setAttribute(attr, "pane-" + el.getAttribute(attr)); });
        });
        if (article.getAttribute("aria-labelledby")) {
          article.setAttribute("aria-labelledby", "pane-" + article.getAttribute("aria-labelledby"));
        }
        pane.replaceChildren(document.importNode(article, true));
        paneUid = row ? row.getAttribute("data-uid") : null;
        markCurrent();
        $$("iframe.body", pane).forEach(fitFrame);
        pane.scrollTop = 0;
      })
      .catch(function () { window.location.href = href; });
  }
  document.addEventListener("click", function (e) {
    var a = e.target.closest ? e.target.closest("#list a.open") : null;
    if (!a || !paneShown() || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) { return; }
    e.preventDefault();
    var row = a.closest("tr.msg");
    var list = rows();
    cursor = list.indexOf(row);
    list.forEach(function (r) { r.classList.toggle("cursor", r === row); });
    openInPane(a.href, row);
  });
  document.addEventListener("mailyard:refreshed", function () {
    markCurrent();
    var list = rows();
    if (cursor >= 0 && cursor < list.length) { list[cursor].classList.add("cursor"); }
  });

  // After a Delete, Archive, Spam or Move from the list or the reading pane
  // the server answers with the list again (its notice carries the Undo):
  // the cursor goes back where the message was, on the one below it, and a
  // message that was open in the pane makes way for that one, opened there,
  // so triage goes on down the list. What the next page needs is kept in
  // sessionStorage for it (this tab only), read once.
  var afterKey = "mailyard.after";
  function uidOf(r) { return r.getAttribute("data-uid"); }
  document.addEventListener("submit", function (e) {
    var form = e.target, btn = e.submitter;
    if (e.defaultPrevented || !btn || ["archive", "delete", "spam", "move"].indexOf(btn.value) < 0) { return; }
    var list = rows(), gone, open = false;
    if (form.id === "list-form") {
      gone = $$("#list input[name=uid]:checked").map(function (cb) { return cb.value; });
    } else if (pane && pane.contains(form) && paneUid !== null) {
      gone = [paneUid];
      open = true;
    } else {
      return;
    }
    var at = -1;
    list.forEach(function (r, i) { if (at < 0 && gone.indexOf(uidOf(r)) >= 0) { at = i; } });
    if (at < 0) { return; }
    var stays = function (r) { return gone.indexOf(uidOf(r)) < 0; };
    var next = list.slice(at + 1).filter(stays)[0] || list.slice(0, at).filter(stays).pop();
    try {
      window.sessionStorage.setItem(afterKey, JSON.stringify({
        path: window.location.pathname, gone: gone[0], next: next ? uidOf(next) : null, index: at, open: open }));
    } catch (err) { /* storage refused: the list starts at the top */ }
  });
  (function () {
    var after = null;
    try {
      after = JSON.parse(window.sessionStorage.getItem(afterKey) || "null");
      window.sessionStorage.removeItem(afterKey);
    } catch (err) { return; }
    var list = rows();
    if (!after || after.path !== window.location.pathname || !list.length) { return; }
    var find = function (uid) { return list.map(uidOf).indexOf(uid); };
    // the message itself when it did not go (a Move without a folder chosen)
    var i = find(after.gone);
    if (i < 0) { i = after.next === null ? -1 : find(after.next); }
    if (i < 0) { i = Math.min(after.index, list.length - 1); }
    focusRow(i);
    var link = $("a.open", list[cursor]);
    if (after.open && link && paneShown()) { openInPane(link.href, list[cursor]); }
  })();

  // Desktop notifications for new mail in INBOX: permission is asked only
  // when the user presses the button (never on page load), and only once.
  var notifyButton = $("#notify-toggle");
  var notifyKey = "mailyard.notify";
  function notifyOn() {
    return window.Notification && window.Notification.permission === "granted" && window.localStorage.getItem(notifyKey) === "1";
  }
  function notifyLabel() {
    if (!notifyButton) { return; }
    var denied = window.Notification.permission === "denied";
    notifyButton.textContent = denied ? "Notifications blocked" : (notifyOn() ? "Notifications on" : "Notify me of new mail");
    notifyButton.setAttribute("aria-pressed", notifyOn() ? "true" : "false");
    notifyButton.disabled = denied;
  }
  if (notifyButton && window.Notification) {
    notifyButton.hidden = false;
    notifyLabel();
    notifyButton.addEventListener("click", function () {
      if (window.Notification.permission === "default") {
        Promise.resolve(window.Notification.requestPermission()).then(function (p) {
          if (p === "granted") { window.localStorage.setItem(notifyKey, "1"); }
          notifyLabel();
          startFromNow();
        });
      } else if (window.Notification.permission === "granted") {
        window.localStorage.setItem(notifyKey, notifyOn() ? "0" : "1");
        notifyLabel();
        startFromNow();
      }
    });
  }
  function inboxUnseen() {
    var c = $("#folder-list a[data-inbox] .count");
    return c ? parseInt(c.textContent, 10) || 0 : 0;
  }
  var baseTitle = document.title.replace(/^\(\d+\) /, "");
  document.addEventListener("mailyard:folders", function (e) {
    var now = inboxUnseen();
    document.title = (now ? "(" + now + ") " : "") + baseTitle;
    if (now > e.detail.before && notifyOn()) { announce(now - e.detail.before); }
  });
  // What a notification says: the sender and subject of the newest unread
  // message that came after the last one announced, "and N more" with it
  // (/events/newest, this session's own INBOX only); the count alone when
  // that cannot be had.
  var announced = null;
  function newest(after) {
    return fetch("/events/newest" + (after === null ? "" : "?after=" + after),
                 { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; });
  }
  function show(body) {
    var note = new window.Notification("mailyard: new mail", { body: body, tag: "mailyard-new-mail" });
    note.onclick = function () { window.focus(); };
  }
  function announce(n) {
    var fallback = n + " new message" + (n > 1 ? "s" : "") + " in INBOX";
    if (announced === null) { show(fallback); return; }
    newest(announced).then(function (d) {
      if (!d) { show(fallback); return; }
      announced = Math.max(announced, d.uid || 0);
      if (!d.count) { return; }
      var line = (d.from || "(unknown sender)") + ": " + (d.subject || "(no subject)");
      show(d.count > 1 ? line + "\nand " + (d.count - 1) + " more" : line);
    }).catch(function () { show(fallback); });
  }
  function startFromNow() {
    if (notifyOn() && announced === null && window.fetch) {
      newest(null).then(function (d) { if (d && announced === null) { announced = d.uid || 0; } }).catch(function () {});
    }
  }
  startFromNow();

  // Live updates: when a folder of ours changes (new mail, flags from IMAP, ...),
  // re-render the message list and the folder counts without a full reload.
  var list = $("#list");
  if (window.EventSource && document.body.getAttribute("data-csrf")) {
    var pending = null;
    var refresh = function () {
      pending = null;
      var url = new URL(window.location.href);
      if (!list) {
        var at = $("#folder-list a[aria-current]") || $("#folder-list a[data-inbox]") || { dataset: {} };
        url = new URL("/box/" + at.dataset.box, window.location.href);
        url.search = "";
      }
      url.searchParams.set("fragment", "1");
      url.searchParams.delete("notice");
      if (!list && !/^\/box\/\d+$/.test(url.pathname)) { return; }
      fetch(url.toString(), { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (!data) { return; }
          var navList = $("#nav");
          var before = inboxUnseen();
          if (navList) { navList.innerHTML = data.folders; }
          document.dispatchEvent(new CustomEvent("mailyard:folders", { detail: { before: before } }));
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
    // the stream first replays what changed since this page's request (web/recent.py)
    var since = document.body.getAttribute("data-since");
    var source = null;
    var delay = 1000;
    var open = function () {
      source = new EventSource("/events" + (since ? "?since=" + encodeURIComponent(since) : ""));
      source.addEventListener("open", function () { delay = 1000; });
      source.addEventListener("change", function () {
        if (!pending) { pending = window.setTimeout(refresh, 150); }
      });
      // A stream the browser gave up on (an error answer such as 503 while
      // the store is out of reach) is opened again once the server answers,
      // asked later and later; it asks from this page's start, so what
      // changed meanwhile is replayed. A session that ended stops it.
      source.addEventListener("error", function () {
        if (source.readyState === EventSource.CLOSED) { later(); }  // else the browser retries by itself
      });
    };
    var later = function () {
      window.setTimeout(function () {
        // the answer's status says which (EventSource does not tell it)
        var probe = new AbortController();
        fetch("/events", { credentials: "same-origin", redirect: "manual", signal: probe.signal })
          .then(function (r) {
            probe.abort();
            // a server that is down or restarting (503, a proxy's 502 or
            // 504, 408, 429): later; a session that ended (a redirect to
            // the login page, 401, 403): no more
            if (r.ok) { open(); } else if (r.status >= 500 || r.status === 408 || r.status === 429) { later(); }
          }, later);
      }, delay);
      delay = Math.min(delay * 2, 60000);
    };
    open();
    window.addEventListener("beforeunload", function () { source.close(); });
  }
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
