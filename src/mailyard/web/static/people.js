/* Recipient fields of the compose form: addresses shown as removable chips,
   and suggestions from the address book as you type (/contacts/suggest).
   The WAI-ARIA 1.2 combobox pattern with a listbox popup: arrows move
   through the suggestions, Enter takes one, Escape closes them.
   Progressive enhancement: the original text field stays the form's field
   (kept in step with the chips, moved out of sight); without this script it
   is a plain comma-separated field. */
(function () {
  "use strict";
  var form = document.getElementById("compose-form");
  if (!form || !window.fetch) { return; }
  var seq = 0;

  /* Split an address list at commas and semicolons outside quotes,
     comments and angle brackets (RFC 5322 3.4). */
  function splitAddresses(text) {
    var out = [], cur = "", quoted = false, angle = 0, paren = 0, i, ch;
    for (i = 0; i < text.length; i++) {
      ch = text.charAt(i);
      if (ch === "\\" && quoted) { cur += ch + text.charAt(i + 1); i++; continue; }
      if (ch === '"') { quoted = !quoted; }
      else if (!quoted && ch === "<") { angle++; }
      else if (!quoted && ch === ">" && angle) { angle--; }
      else if (!quoted && ch === "(") { paren++; }
      else if (!quoted && ch === ")" && paren) { paren--; }
      if ((ch === "," || ch === ";") && !quoted && !angle && !paren) {
        if (cur.trim()) { out.push(cur.trim()); }
        cur = "";
      } else { cur += ch; }
    }
    if (cur.trim()) { out.push(cur.trim()); }
    return out;
  }

  function enhance(field) {
    var name = field.id;
    var wrap = document.createElement("div");
    wrap.className = "chips";
    var list = document.createElement("ul");
    list.className = "chip-list";
    list.setAttribute("aria-label", "Recipients (" + name + ")");
    var entry = document.createElement("input");
    entry.type = "text";
    entry.id = name + "-entry";
    entry.className = "chip-entry";
    entry.setAttribute("role", "combobox");
    entry.setAttribute("aria-autocomplete", "list");
    entry.setAttribute("aria-expanded", "false");
    entry.setAttribute("autocomplete", "off");
    var box = document.createElement("ul");
    box.id = name + "-suggestions";
    box.className = "suggestions";
    box.setAttribute("role", "listbox");
    box.setAttribute("aria-label", "Suggested addresses");
    box.hidden = true;
    entry.setAttribute("aria-controls", box.id);
    wrap.appendChild(list);
    wrap.appendChild(entry);
    wrap.appendChild(box);
    field.parentNode.insertBefore(wrap, field.nextSibling);
    // the original field stays the form's value, out of sight and out of the tab order
    field.classList.add("chip-source");
    field.setAttribute("tabindex", "-1");
    field.setAttribute("aria-hidden", "true");
    var label = form.querySelector('label[for="' + name + '"]');
    if (label) { label.htmlFor = entry.id; }
    wrap.addEventListener("click", function (ev) { if (ev.target === wrap || ev.target === list) { entry.focus(); } });

    var chips = [], options = [], active = -1, timer = null;

    function sync() {
      var all = chips.slice();
      if (entry.value.trim()) { all.push(entry.value.trim()); }
      field.value = all.join(", ");
    }
    function render() {
      list.textContent = "";
      chips.forEach(function (text, i) {
        var li = document.createElement("li");
        li.className = "chip";
        var span = document.createElement("span");
        span.textContent = text;
        var del = document.createElement("button");
        del.type = "button";
        del.className = "chip-remove";
        del.setAttribute("aria-label", "Remove " + text);
        del.textContent = "\u00d7";
        del.addEventListener("click", function () {
          chips.splice(i, 1); render(); sync(); entry.focus();
        });
        li.appendChild(span);
        li.appendChild(del);
        list.appendChild(li);
      });
    }
    function fromField() {
      chips = splitAddresses(field.value);
      entry.value = "";
      render();
    }
    function add(text) {
      splitAddresses(text).forEach(function (t) { if (chips.indexOf(t) < 0) { chips.push(t); } });
      entry.value = "";
      render(); sync(); close();
    }
    function close() {
      box.hidden = true; box.textContent = ""; options = []; active = -1;
      entry.setAttribute("aria-expanded", "false");
      entry.removeAttribute("aria-activedescendant");
    }
    function highlight(i) {
      options.forEach(function (o, j) { o.el.setAttribute("aria-selected", j === i ? "true" : "false"); });
      active = i;
      if (i >= 0) {
        entry.setAttribute("aria-activedescendant", options[i].el.id);
        options[i].el.scrollIntoView({block: "nearest"});
      } else { entry.removeAttribute("aria-activedescendant"); }
    }
    function show(items) {
      box.textContent = ""; options = []; active = -1;
      items.forEach(function (s, i) {
        var li = document.createElement("li");
        li.id = box.id + "-" + i;
        li.setAttribute("role", "option");
        li.setAttribute("aria-selected", "false");
        li.className = "suggestion";
        li.textContent = s.label;
        li.addEventListener("mousedown", function (ev) { ev.preventDefault(); add(s.label); });
        box.appendChild(li);
        options.push({el: li, label: s.label});
      });
      box.hidden = !items.length;
      entry.setAttribute("aria-expanded", items.length ? "true" : "false");
    }
    function lookup() {
      var q = entry.value.trim(), mine = ++seq;
      if (!q) { close(); return; }
      fetch("/contacts/suggest?q=" + encodeURIComponent(q), {credentials: "same-origin",
        headers: {"Accept": "application/json"}})
        .then(function (r) { return r.ok ? r.json() : {suggestions: []}; })
        .then(function (data) {
          if (mine === seq && entry.value.trim() === q) { show(data.suggestions || []); }
        })
        .catch(function () { close(); });
    }

    entry.addEventListener("input", function () {
      var v = entry.value;
      if (/[,;]\s*$/.test(v) && v.indexOf("@") >= 0) { add(v); return; }
      sync();
      clearTimeout(timer);
      timer = setTimeout(lookup, 120);
    });
    entry.addEventListener("keydown", function (ev) {
      var open = !box.hidden && options.length;
      if (ev.key === "ArrowDown" && open) {
        ev.preventDefault(); highlight((active + 1) % options.length);
      } else if (ev.key === "ArrowUp" && open) {
        ev.preventDefault(); highlight(active <= 0 ? options.length - 1 : active - 1);
      } else if (ev.key === "Enter") {
        if (open && active >= 0) { ev.preventDefault(); add(options[active].label); }
        else if (entry.value.indexOf("@") >= 0) { ev.preventDefault(); add(entry.value); }
      } else if (ev.key === "Escape") {
        if (open) { ev.preventDefault(); ev.stopPropagation(); close(); }
      } else if (ev.key === "Backspace" && !entry.value && chips.length) {
        chips.pop(); render(); sync();
      }
    });
    entry.addEventListener("blur", function () {
      if (entry.value.indexOf("@") >= 0) { add(entry.value); } else { close(); }
    });
    // a value put into the original field (a script, a test, autofill) becomes chips
    field.addEventListener("input", fromField);
    form.addEventListener("submit", sync, true);
    fromField();
    // the page's first focus (autofocus, whether given yet or not) goes to
    // what the user sees and types in
    if (field.autofocus || document.activeElement === field) { entry.focus(); }
  }

  ["to", "cc", "bcc"].forEach(function (id) {
    var field = document.getElementById(id);
    if (field && field.form === form) { enhance(field); }
  });
})();
