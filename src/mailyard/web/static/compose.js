// mailyard webmail, the compose page: autosave, attachments by drag and drop,
// upload progress. Without it the form works as it is ("Save draft", the
// file input, a plain submit).
"use strict";
(function () {
  var form = document.getElementById("compose-form");
  if (!form || !window.fetch || !window.FormData) { return; }
  var status = document.getElementById("compose-status");
  var fileInput = document.getElementById("attachment");
  function say(text) { if (status) { status.textContent = text; } }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  // what to do with chosen files once the session has ended: a login page
  // cannot carry them (a browser does not refill a file input)
  var FILES_AFTER_END = " To send the chosen files too, log in again in another tab (this form keeps your " +
    "text and the files), then press \u201cSend\u201d here again. Pressed before that, Send goes without " +
    "the files: your text comes back with a login, and the files are to be chosen again.";

  // --- after the session ended: whether this browser has a live session
  // of the form's account again (logged in in another tab). Its page gives
  // the token the form then goes on with; else the form stays "ended".
  var account = form.elements.account ? form.elements.account.value.toLowerCase() : "";
  function renew() {
    return fetch("/compose", { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : ""; })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var other = doc.getElementById("compose-form");
        var token = other && other.elements.csrf, whose = other && other.elements.account;
        if (token && token.value && whose && whose.value.toLowerCase() === account) {
          form.elements.csrf.value = token.value;
          ended = false;
        } else {
          ended = true;
        }
        return !ended;
      }, function () { return !ended; });  // (no connection: as it was)
  }

  // --- autosave: every few seconds while the form changes, the form
  // replaces the previous version in Drafts. Chosen files go with one save
  // and leave the file input: the draft keeps them, listed (and sent) as
  // its attachments. After the session ended it stops, saying how to go on.
  var every = parseInt(form.getAttribute("data-autosave-ms"), 10) || 5000;
  var dirty = false, saving = null, sending = false, ended = false;
  form.addEventListener("input", function () { dirty = true; });
  function chosen() { return fileInput && fileInput.files ? Array.prototype.slice.call(fileInput.files) : []; }
  if (fileInput) {
    // (a drop sets the files and fires "change" only)
    fileInput.addEventListener("change", function () { if (chosen().length) { dirty = true; } });
  }
  function unchoose(sent) {
    // the files a save took leave the input; any chosen meanwhile stay
    if (!window.DataTransfer) { fileInput.value = ""; return; }
    var dt = new DataTransfer();
    chosen().forEach(function (f) { if (sent.indexOf(f) < 0) { dt.items.add(f); } });
    fileInput.files = dt.files;
    fileInput.dispatchEvent(new Event("change", { bubbles: true }));
  }

  function renderKept(kept) {
    var box = document.getElementById("kept-attachments");
    if (!box) { return; }
    var list = document.getElementById("kept-list");
    while (list.firstChild) { list.removeChild(list.firstChild); }
    kept.forEach(function (k) {
      var label = document.createElement("label"), cb = document.createElement("input"), meta = document.createElement("span");
      label.className = "check";
      cb.type = "checkbox"; cb.name = "keep"; cb.value = k[0]; cb.checked = true;
      meta.className = "meta"; meta.textContent = " (" + k[2] + ", " + k[3] + ")";
      label.appendChild(cb); label.appendChild(document.createTextNode(" " + k[1])); label.appendChild(meta);
      list.appendChild(label);
    });
    box.hidden = kept.length === 0;
  }

  function save() {
    if (saving || !dirty || sending || ended) { return saving; }
    dirty = false;
    var data = new FormData(form);
    data.delete("attachment");
    // (files over the size limit are refused by app.js's check: not uploaded)
    var files = fileInput && fileInput.validity.valid ? chosen() : [];
    files.forEach(function (f) { data.append("attachment", f, f.name); });
    data.set("action", "save");
    say(files.length ? "Saving draft with the chosen files\u2026" : "Saving draft\u2026");
    saving = fetch("/compose/autosave", { method: "POST", body: data, credentials: "same-origin",
                                          headers: { "Accept": "application/json" } })
      .then(function (r) {
        return r.json().then(function (j) { return { ok: r.ok, status: r.status, j: j }; },
                             function () { return { ok: false, status: r.status, j: {} }; });
      })
      .then(function (res) {
        if (res.ok) {
          form.elements.draft_uid.value = res.j.draft_uid;
          renderKept(res.j.kept || []);
          if (files.length) { unchoose(files); }
          var d = new Date();
          say("Draft saved at " + pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." +
              (chosen().length ? " The chosen files are not in it yet." : ""));
        } else if (res.status === 401 || res.j.ended) {
          // saving again cannot help: Send or Save draft leads to a login that keeps the text
          ended = true;
          say((res.j.error || "Not saved: your session has ended. Press \u201cSave draft\u201d to log in again.") +
              (chosen().length ? FILES_AFTER_END : ""));
        } else if (res.status === 413) {
          // past the bound of a form without a session, or a message too large
          return renew().then(function (live) {
            if (live) { say("Not saved: the chosen files are too large (error 413)."); return; }
            say("Not saved: your session has ended." + FILES_AFTER_END);
          });
        } else {
          // refused (saved again after the next change)
          say(res.j.error || "Not saved (error " + res.status + ").");
        }
      }, function () { dirty = true; say("Not saved (no connection); trying again."); })
      .then(function () { saving = null; });
    return saving;
  }
  window.setInterval(save, every);

  // --- a forward's "inline" choice puts the original's header block and
  // text under the note (to edit as any text); "attached" takes it out
  // again while it is as it was. The hidden forward_text says it is there
  // (without this script the server puts it in).
  var inlineText = document.getElementById("forward-inline-text");
  form.addEventListener("change", function (e) {
    if (e.target.name !== "forward_mode" || !inlineText) { return; }
    var text = inlineText.content.textContent, flag = form.elements.forward_text;
    var area = document.getElementById("body");
    if (e.target.value === "inline" && flag.value !== "in-body") {
      area.value = area.value.replace(/\s+$/, "") + "\n\n" + text;
      flag.value = "in-body";
    } else if (e.target.value === "attached" && flag.value === "in-body") {
      var at = area.value.length - text.length;
      if (at >= 0 && area.value.slice(at) === text) {
        area.value = area.value.slice(0, at).replace(/\s+$/, "");
        flag.value = "";
      }
    }
    dirty = true;
  });

  // --- drag and drop onto the form: the files join the file input's list.
  var zone = document.getElementById("drop-zone");
  function addFiles(files) {
    if (!fileInput || !window.DataTransfer) { return; }
    var dt = new DataTransfer();
    Array.prototype.forEach.call(fileInput.files || [], function (f) { dt.items.add(f); });
    Array.prototype.forEach.call(files, function (f) { dt.items.add(f); });
    fileInput.files = dt.files;
    fileInput.dispatchEvent(new Event("change", { bubbles: true }));  // the size check of app.js
  }
  if (zone && fileInput) {
    var hint = document.getElementById("drop-hint");
    if (hint && window.DataTransfer) { hint.hidden = false; }  // hidden without this script, which dropping needs
    ["dragenter", "dragover"].forEach(function (name) {
      form.addEventListener(name, function (e) {
        if (e.dataTransfer && Array.prototype.indexOf.call(e.dataTransfer.types || [], "Files") >= 0) {
          e.preventDefault(); zone.classList.add("over");
        }
      });
    });
    form.addEventListener("dragleave", function (e) {
      if (!form.contains(e.relatedTarget)) { zone.classList.remove("over"); }
    });
    form.addEventListener("drop", function (e) {
      if (!e.dataTransfer || !e.dataTransfer.files || !e.dataTransfer.files.length) { return; }
      e.preventDefault(); zone.classList.remove("over");
      addFiles(e.dataTransfer.files);
    });
    fileInput.addEventListener("change", function () {
      var names = Array.prototype.map.call(fileInput.files || [], function (f) { return f.name; });
      var shown = document.getElementById("chosen-files");
      if (shown) { shown.textContent = names.length ? "To attach: " + names.join(", ") : ""; }
    });
  }

  // --- submit: after any save under way (its UID is the one to replace),
  // with the upload's progress when there are files.
  var progress = document.getElementById("upload-progress");
  // After the session ended: first whether another tab logged in again
  // (then the form goes on under that session, files and all); if not, the
  // form goes without its files, whose size a form without a session may
  // not have, and its text comes back in a page that logs in again.
  function hidden(name, value) {
    var input = document.createElement("input");
    input.type = "hidden"; input.name = name; input.value = value;
    form.appendChild(input);
  }
  form.addEventListener("submit", function (e) {
    if (e.defaultPrevented) { return; }
    var button = e.submitter;
    if (!saving && !chosen().length && !ended) { sending = true; return; }
    e.preventDefault();
    sending = true;
    Promise.resolve(saving).then(function () { return ended ? renew() : true; }).then(function (live) {
      var hasFiles = chosen().length > 0;  // (a save may have taken them into the draft)
      var data = new FormData(form);
      if (button && button.name) { data.set(button.name, button.value); }
      if (!hasFiles || !live || !window.XMLHttpRequest) {
        if (button && button.name) { hidden(button.name, button.value); }
        if (hasFiles && !live) {
          fileInput.disabled = true;  // (a disabled input is not posted)
          hidden("files_left", "1");  // the page that comes back says to choose them again
        }
        form.submit();
        return;
      }
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.getAttribute("action"));  // (form.action is the button named "action")
      if (progress) { progress.hidden = false; progress.value = 0; }
      xhr.upload.addEventListener("progress", function (p) {
        if (p.lengthComputable && progress) { progress.value = Math.round(p.loaded / p.total * 100); }
        if (p.lengthComputable) { say("Uploading\u2026 " + Math.round(p.loaded / p.total * 100) + " %"); }
      });
      xhr.addEventListener("load", function () {
        var landed = xhr.responseURL ? new URL(xhr.responseURL) : null;
        var posted = new URL(form.getAttribute("action"), window.location.href);
        if (xhr.status < 300 && landed && landed.href !== posted.href) {
          window.location.assign(xhr.responseURL); return;
        }
        var html = (xhr.getResponseHeader("Content-Type") || "").indexOf("text/html") === 0;
        if (html && (xhr.status < 300 || xhr.responseText.indexOf('id="compose-form"') >= 0)) {
          // refused, or a page of its own (sent already, the store out of
          // reach): the server's page, which lists the files it kept
          document.open(); document.write(xhr.responseText); document.close();
          return;
        }
        // anything else leaves this form as it is, text and files
        sending = false; if (progress) { progress.hidden = true; }
        var code = xhr.status;
        if (code !== 401 && code !== 403 && code !== 413) {
          say("Not sent (error " + code + "); your text and the chosen files are still here: press " +
              "\u201cSend\u201d to try again.");
          return;
        }
        renew().then(function (live) {
          if (!live) { say("Not sent: your session has ended." + FILES_AFTER_END); }
          else if (code === 413) { say("Not sent: the message is too large (error 413); your text is still here."); }
          else { say("Not sent: you have logged in again in another tab. Press \u201cSend\u201d again to send it."); }
        });
      });
      xhr.addEventListener("error", function () {
        sending = false; if (progress) { progress.hidden = true; }
        say("The upload failed (no connection?); your text is still here.");
      });
      xhr.send(data);
    });
  });
})();
