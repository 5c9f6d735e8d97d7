"""The Sieve interpreter: a compiled script, a message and its envelope in,
the actions out (RFC 5228 2.10, 4), without I/O.

``run`` walks the checked tree of parser.py. Execution is bounded
(``Limits``): a deadline on the clock, the number of commands run, the
actions and the redirects a message may cause; a script that reaches one
raises ``SieveRuntimeError`` and the caller keeps the message (RFC 5228
2.10.6: an error cancels the script's actions and the implicit keep
applies). The deadline holds inside a test too: the wildcard matcher of
``:matches``, ``:regex`` and the MIME parse of ``body`` (RFC 5173) look at
the clock as they go, so no single test runs on past it; a ``body`` test
looks at the first ``Limits.max_body_parts`` MIME parts only.

Where the parts live: the actions and what a run is given (``actions.py``),
comparators and match types (``match.py``), runs of simple rules compiled
to one function (``chain.py``), the message as tests see it
(``message.py``: ``SieveMessage`` is shared by the runs of one delivery),
spamtest's levels (``spamtest.py``). The caller chooses where a run
happens (the delivery runs it in a thread, delivery/sieve.py): nothing
here does I/O.

``Result.actions`` holds the actions in order, duplicates merged as RFC
5228 2.10.3 asks; the implicit keep (RFC 5228 2.10.2) is a ``Keep`` added
at the end when no action cancelled it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from email.header import Header
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import quote

from ..message.address import Group, parse_address_list
from ..message.headers import bytes_to_text, decode_words
from .actions import (
    Action,
    Discard,
    DuplicateMark,
    Envelope,
    FileInto,
    Keep,
    Limits,
    Notify,
    Redirect,
    Reject,
    Result,
    Vacation,
)
from .chain import chain_plan
from .errors import SieveRuntimeError
from .mailto import parse_mailto
from .match import Matcher
from .message import MessageView, SieveMessage, address_part
from .parser import FIELD_NAME, PROTECTED_FIELDS, Node, Script

# ---------------------------------------------------------------------------
# the run

def _top(ctx: _Context, script: Script) -> None:
    """The script's commands, each run of simple rules through its
    generated function (``chain_plan``), the rest one by one."""
    plan = chain_plan(script)
    cmds = script.commands
    if plan is None:
        _block(ctx, cmds)
        return
    i = 0
    for seg in plan:
        while i < seg.start:
            _command(ctx, cmds[i])
            i += 1
        values = [ctx.msg.folded(key, ctx.limits) for key in seg.keys]
        n = seg.end - seg.start
        at = 0
        while at < n:
            hit = seg.find(values, ctx.size, at)
            ctx.steps += (min(hit, n - 1) - at + 1) * seg.cost
            ctx.step()
            if time.monotonic() > ctx.deadline:
                raise SieveRuntimeError("the script ran too long")
            if hit >= n:
                break
            for child in cmds[seg.start + hit].branches[0][1]:
                _command(ctx, child)
            at = hit + 1
        i = seg.end
    while i < len(cmds):
        _command(ctx, cmds[i])
        i += 1


class _Stop(Exception):
    pass


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*|[0-9]+)\}")


class _Context:
    def __init__(self, script: Script, message: SieveMessage, envelope: Envelope, limits: Limits,
                 mailbox_exists: Callable[[str], bool] | None) -> None:
        self.script = script
        self.msg = MessageView(message)
        self.size = len(message.raw)
        self.envelope = envelope
        self.limits = limits
        self.mailbox_exists = mailbox_exists
        self.deadline = time.monotonic() + limits.max_seconds
        self.steps = 0
        self.result = Result()
        self.flags: list[str] = []
        self.variables: dict[str, str] = {}
        # RFC 6609 3.4: variables declared global are shared by the scripts a
        # run includes; each script's own are local to it
        self.globals: dict[str, str] = {}
        self.global_names: set[str] = set()
        self.include_depth = 0
        self.included: set[tuple[str, str]] = set()
        self.include_loader: Callable[[str, str], Script | None] | None = None
        self.duplicate_seen: Callable[[str, str], bool] | None = None
        self.match_vars: list[str] = []
        self.variables_on = "variables" in script.require
        self.redirects = 0
        self.edits = 0
        self.now = 0.0

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.limits.max_steps:
            raise SieveRuntimeError("the script ran too many steps")
        if self.steps % 64 == 0 and time.monotonic() > self.deadline:
            raise SieveRuntimeError("the script ran too long")

    def check_time(self) -> None:
        """The deadline, looked at now (for work that takes more than a step's time)."""
        if time.monotonic() > self.deadline:
            raise SieveRuntimeError("the script ran too long")

    def budget(self) -> float:
        """The seconds left before the deadline (at least a millisecond: a
        timeout of 0 would mean none)."""
        return max(0.001, self.deadline - time.monotonic())

    def get_var(self, name: str) -> str:
        name = name.lower()
        if name.startswith("global."):  # RFC 6609 3.5: the "global" namespace
            return self.globals.get(name[7:], "")
        if name in self.global_names:
            return self.globals.get(name, "")
        return self.variables.get(name, "")

    def set_var(self, name: str, value: str) -> None:
        name = name.lower()
        if name.startswith("global."):
            self.globals[name[7:]] = value
        elif name in self.global_names:
            self.globals[name] = value
        else:
            self.variables[name] = value

    def expand(self, s: str) -> str:
        """RFC 5229 3: ``${name}`` and ``${N}`` replaced (an unknown one by "")."""
        if not self.variables_on or "${" not in s:
            return s

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name.isdigit():
                n = int(name)
                return self.match_vars[n] if n < len(self.match_vars) else ""
            return self.get_var(name)

        return _VAR.sub(sub, s)

    def add(self, action: Action) -> None:
        if len(self.result.actions) >= self.limits.max_actions:
            raise SieveRuntimeError(f"too many actions (at most {self.limits.max_actions})")
        actions = self.result.actions
        if isinstance(action, Redirect):
            if any(isinstance(a, Redirect) and a.address.lower() == action.address.lower() for a in actions):
                return  # RFC 5228 2.10.3: once per address
            self.redirects += 1
            if self.redirects > self.limits.max_redirects:
                raise SieveRuntimeError(f"too many redirects (at most {self.limits.max_redirects})")
        if isinstance(action, Keep | FileInto):
            name = "INBOX" if isinstance(action, Keep) else action.mailbox
            for a in actions:
                other = "INBOX" if isinstance(a, Keep) else a.mailbox if isinstance(a, FileInto) else None
                if other is not None and _same_mailbox(name, other):
                    return  # RFC 5228 2.10.3: filed once
        if isinstance(action, Notify):
            if any(isinstance(a, Notify) and a.method.lower() == action.method.lower()
                   and a.message == action.message for a in actions):
                return  # RFC 5435 3.8: the same notification once
            if sum(isinstance(a, Notify) for a in actions) >= self.limits.max_notifications:
                return  # RFC 5435 3.9: the site limits how many a message causes
            actions.append(action)
            return
        if isinstance(action, Vacation) and any(isinstance(a, Vacation) for a in actions):
            raise SieveRuntimeError("more than one vacation action (RFC 5230 4.7)")
        if isinstance(action, Reject):
            if any(isinstance(a, Reject) for a in actions):
                raise SieveRuntimeError("more than one reject action")
        rejects = any(isinstance(a, Reject) for a in [*actions, action])
        if rejects and any(isinstance(a, Vacation | Keep | FileInto) or (isinstance(a, Redirect) and not a.copy)
                           for a in [*actions, action]):
            # RFC 5429 2.1: reject cannot be combined with vacation, keep, fileinto or redirect
            raise SieveRuntimeError("reject cannot be combined with keep, fileinto, redirect or vacation")
        actions.append(action)

    def flag_list(self, values: Iterable[str]) -> list[str]:
        """RFC 5232 2: flags separated by spaces, each once (system flags
        compared without case)."""
        out: list[str] = []
        seen: set[str] = set()
        for v in values:
            for f in self.expand(v).split():
                key = f.lower() if f.startswith("\\") else f
                if key not in seen:
                    seen.add(key)
                    out.append(f)
        return out


def _same_mailbox(a: str, b: str) -> bool:
    if a.upper() == "INBOX" and b.upper() == "INBOX":
        return True
    return a == b


def _block(ctx: _Context, commands: list[Node]) -> None:
    for node in commands:
        _command(ctx, node)


def _command(ctx: _Context, node: Node) -> None:
    ctx.step()
    name = node.name
    if name == "if":
        for test, block in node.branches:
            if test is not None:
                m = test.prepared
                # a fast test counts its own step (_fast_test)
                hit = m.fast(ctx) if m is not None and m.fast is not None else _test(ctx, test)
            if test is None or hit:
                for child in block:
                    _command(ctx, child)
                return
        return
    t = node.tags
    if name == "stop":
        raise _Stop
    if name == "keep":
        flags = ctx.flag_list(t[":flags"]) if ":flags" in t else list(ctx.flags)
        ctx.add(Keep(tuple(flags)))
        ctx.result.implicit_keep = False
    elif name == "discard":
        ctx.add(Discard())
        ctx.result.implicit_keep = False
    elif name == "fileinto":
        flags = ctx.flag_list(t[":flags"]) if ":flags" in t else list(ctx.flags)
        copy = ":copy" in t
        ctx.add(FileInto(ctx.expand(node.pos[0]), tuple(flags), ":create" in t, copy))
        if not copy:
            ctx.result.implicit_keep = False
    elif name == "redirect":
        address = ctx.expand(node.pos[0]).strip()
        if address.startswith("<") and address.endswith(">"):
            address = address[1:-1]
        if "@" not in address or any(c in address for c in " \t\r\n<>,"):
            # RFC 5228 4.2: the argument must be a syntactically valid address
            raise SieveRuntimeError(f"redirect to an invalid address {address!r}")
        copy = ":copy" in t
        ctx.add(Redirect(address, copy))
        if not copy:
            ctx.result.implicit_keep = False
    elif name in ("reject", "ereject"):
        ctx.add(Reject(ctx.expand(node.pos[0]), name == "ereject"))
        ctx.result.implicit_keep = False
    elif name == "vacation":
        _vacation(ctx, node)
    elif name in ("setflag", "addflag", "removeflag"):
        var, flags = node.pos
        current = (ctx.flag_list([ctx.get_var(ctx.expand(var))]) if var is not None
                   else list(ctx.flags))
        new = ctx.flag_list(flags)
        if name == "setflag":
            current = new
        elif name == "addflag":
            current = ctx.flag_list([*current, *new])
        else:
            drop = {f.lower() if f.startswith("\\") else f for f in new}
            current = [f for f in current if (f.lower() if f.startswith("\\") else f) not in drop]
        if var is not None:
            ctx.set_var(ctx.expand(var), " ".join(current))
        else:
            ctx.flags = current
    elif name == "set":
        _set(ctx, node)
    elif name == "global":
        for var in node.pos[0]:
            ctx.global_names.add(ctx.expand(var).lower())
    elif name == "return":
        raise _Return
    elif name == "include":
        _include(ctx, node)
    elif name in ("addheader", "deleteheader"):
        _editheader(ctx, node)
    elif name == "notify":
        _notify(ctx, node)


MAX_INCLUDE_DEPTH = 8
MAX_INCLUDES = 32


class _Return(Exception):
    pass


def _include(ctx: _Context, node: Node) -> None:
    """RFC 6609 3.2: run another script of the user (:personal, the
    default) or of the site (:global) here, with its own variables but the
    globals, the actions and the flags shared; :once runs it at most once,
    :optional ignores a missing one. Bounded in depth and count; a loop is
    an error (RFC 6609 3.2)."""
    t = node.tags
    location = "global" if ":global" in t else "personal"
    name = ctx.expand(node.pos[0])
    key = (location, name)
    if ":once" in t and key in ctx.included:
        return
    if ctx.include_depth >= MAX_INCLUDE_DEPTH:
        raise SieveRuntimeError(f"includes nested deeper than {MAX_INCLUDE_DEPTH} (a loop?)")
    if len(ctx.included) >= MAX_INCLUDES and key not in ctx.included:
        raise SieveRuntimeError(f"more than {MAX_INCLUDES} scripts included")
    script = ctx.include_loader(location, name) if ctx.include_loader is not None else None
    if script is None:
        if ":optional" in t:
            return
        raise SieveRuntimeError(f"include: no {location} script {name!r}")
    ctx.included.add(key)
    saved = (ctx.script, ctx.variables, ctx.global_names, ctx.variables_on, ctx.match_vars)
    ctx.script, ctx.variables, ctx.global_names = script, {}, set()
    ctx.variables_on = "variables" in script.require
    ctx.match_vars = []
    ctx.include_depth += 1
    try:
        _block(ctx, script.commands)
    except _Return:
        pass
    finally:
        ctx.include_depth -= 1
        ctx.script, ctx.variables, ctx.global_names, ctx.variables_on, ctx.match_vars = saved


def _set(ctx: _Context, node: Node) -> None:
    """RFC 5229 4: modifiers apply from the highest precedence down."""
    t = node.tags
    value = ctx.expand(node.pos[1])
    if ":lower" in t:
        value = value.lower()
    if ":upper" in t:
        value = value.upper()
    if ":lowerfirst" in t:
        value = value[:1].lower() + value[1:]
    if ":upperfirst" in t:
        value = value[:1].upper() + value[1:]
    if ":quotewildcard" in t:
        value = re.sub(r"([*?\\])", r"\\\1", value)
    if ":quoteregex" in t:
        value = re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", value)
    if ":encodeurl" in t:
        value = quote(value, safe="-._~")  # RFC 5435 4.1: RFC 3986 percent-encoding of the UTF-8
    if ":length" in t:
        value = str(len(value))
    ctx.set_var(node.pos[0], value[: ctx.limits.max_value_chars])


def _field_name(name: str) -> str:
    """A field name an edit may touch (a name built from variables is checked here)."""
    if not FIELD_NAME.fullmatch(name):
        raise SieveRuntimeError(f"bad header field name {name!r}")
    if name.lower() in PROTECTED_FIELDS:
        raise SieveRuntimeError(f"the {name} field may not be changed (RFC 5293 6)")
    return name


def _editheader(ctx: _Context, node: Node) -> None:
    """RFC 5293: ``addheader`` puts a field first (``:last``: last);
    ``deleteheader`` removes the fields of that name (only the ``:index``-th,
    counted from the end with ``:last``), those whose value matches one of
    the patterns when some are given. Later tests see the edited message;
    the edited message is the one filed and redirected."""
    ctx.edits += 1
    if ctx.edits > ctx.limits.max_header_edits:
        raise SieveRuntimeError(f"too many header edits (at most {ctx.limits.max_header_edits})")
    msg = ctx.msg
    fields = list(msg.original)
    name = _field_name(ctx.expand(node.pos[0]))
    if node.name == "addheader":
        value = ctx.expand(node.pos[1]).replace("\r", " ").replace("\n", " ")[: ctx.limits.max_value_chars]
        # RFC 5293 4: non-ASCII text goes in RFC 2047 encoded words; long values are folded
        encoded = Header(value, "us-ascii" if value.isascii() else "utf-8", header_name=name).encode("\r\n")
        item = (name, encoded.encode("ascii"))
        if ":last" in node.tags:
            fields.append(item)
        else:
            fields.insert(0, item)
        msg.edit(fields)
        ctx.size = len(msg.raw)
        return
    lname = name.lower()
    positions = [i for i, (n, _v) in enumerate(fields) if n.lower() == lname]
    index = node.tags.get(":index")
    if index is not None:
        if index > len(positions):
            return
        positions = [positions[-index] if ":last" in node.tags else positions[index - 1]]
    if node.pos[1] is not None:
        matcher = node.prepared
        if matcher is None:
            matcher = node.prepared = Matcher(node, ctx.variables_on)
        positions = [i for i in positions if matcher.test(ctx, [decode_words(bytes_to_text(fields[i][1]))])]
    if positions:
        drop = set(positions)
        msg.edit([f for i, f in enumerate(fields) if i not in drop])
        ctx.size = len(msg.raw)


def _notify(ctx: _Context, node: Node) -> None:
    """RFC 5435 3: a notification by the mailto method (RFC 5436); an
    invalid URI or :from fails the run (RFC 5435 3.1, 3.3)."""
    t = node.tags
    method = ctx.expand(node.pos[0]).strip()
    try:
        parse_mailto(method)
    except ValueError as exc:
        raise SieveRuntimeError(f"notify: {exc}") from None
    from_ = ctx.expand(t[":from"]).strip() if ":from" in t else None
    if from_ is not None and ("@" not in from_ or any(c in from_ for c in "\r\n")):
        raise SieveRuntimeError(f"notify: bad :from address {from_!r}")
    importance = ctx.expand(t[":importance"]) if ":importance" in t else "2"
    if importance not in ("1", "2", "3"):
        importance = "2"
    options = tuple(ctx.expand(o) for o in t.get(":options", []))
    message = ctx.expand(t[":message"]) if ":message" in t else None
    ctx.add(Notify(method, from_, importance, options, message))


def _vacation(ctx: _Context, node: Node) -> None:
    t = node.tags
    lim = ctx.limits
    if ":seconds" in t:
        seconds = t[":seconds"]
    else:
        seconds = t.get(":days", 7) * 86400
    # RFC 5230 4.1 / RFC 6131 2: the site bounds the period; 0 (RFC 6131) stays 0
    if seconds:
        seconds = max(lim.min_vacation_seconds, min(lim.max_vacation_seconds, seconds))
    reason = ctx.expand(node.pos[0])
    subject = ctx.expand(t[":subject"]) if ":subject" in t else None
    from_ = ctx.expand(t[":from"]) if ":from" in t else None
    handle = ctx.expand(t[":handle"]) if ":handle" in t else ""
    if not handle:
        # RFC 5230 4.2: without :handle, the reason, subject, from and mime decide the handle
        handle = "\0".join([reason, subject or "", from_ or "", "mime" if ":mime" in t else ""])
    addresses = tuple(ctx.expand(a) for a in t.get(":addresses", []))
    ctx.add(Vacation(reason, subject, from_, addresses, seconds, ":mime" in t, handle))


def _test(ctx: _Context, node: Node) -> bool:
    ctx.step()
    matcher = node.prepared
    if matcher is not None and matcher.fast is not None:  # the common case first
        return matcher.fast(ctx)
    name = node.name
    if name == "header" and matcher is not None and matcher.index is None:
        names = node.pos[0]
        if len(names) == 1:
            return matcher.test(ctx, ctx.msg.headers(ctx.expand(names[0])))
        return matcher.test(ctx, [v for h in names for v in ctx.msg.headers(ctx.expand(h))])
    t = node.tags
    if name == "true":
        return True
    if name == "false":
        return False
    if name == "not":
        return not _test(ctx, node.tests[0])
    if name == "allof":
        for x in node.tests:
            if not _test(ctx, x):
                return False
        return True
    if name == "anyof":
        for x in node.tests:
            if _test(ctx, x):
                return True
        return False
    if name == "size":
        if ":over" in t:
            return ctx.size > t[":over"]
        return ctx.size < t[":under"]
    if name == "exists":
        return all(ctx.msg.headers(ctx.expand(h)) for h in node.pos[0])
    if name == "duplicate":
        return _duplicate(ctx, node)
    if matcher is None:
        matcher = node.prepared = Matcher(node, ctx.variables_on)
        if matcher.fast is not None:
            return matcher.fast(ctx)
    if matcher.index is not None and name in ("header", "address", "date"):
        return _indexed(ctx, node, matcher)
    if name in ("date", "currentdate"):
        return _date_test(ctx, node, matcher, None)
    if name == "header":
        if len(node.pos[0]) == 1:
            return matcher.test(ctx, ctx.msg.headers(ctx.expand(node.pos[0][0])))
        return matcher.test(ctx, [v for h in node.pos[0] for v in ctx.msg.headers(ctx.expand(h))])
    if name in ("address", "envelope"):
        part = matcher.part
        sep = ctx.limits.separator
        values: list[str] = []
        if name == "address":
            for h in node.pos[0]:
                values.extend(ctx.msg.addresses(ctx.expand(h), part, sep))
        else:
            for h in node.pos[0]:
                which = ctx.expand(h).lower()
                addr = ctx.envelope.from_ if which == "from" else ctx.envelope.to if which == "to" else None
                if addr is None:
                    continue
                # RFC 5228 5.4: the null reverse-path is "", and so are its parts
                value = address_part(addr, part, sep) if addr else ""
                if value is not None:
                    values.append(value)
        return matcher.test(ctx, values)
    if name == "hasflag":
        var = node.pos[0]
        # RFC 5232 5: the flags held by the named variables, or the internal one
        flags = (ctx.flag_list([ctx.get_var(ctx.expand(v)) for v in var])
                 if var is not None else list(ctx.flags))
        return matcher.test(ctx, flags)
    if name == "string":
        sources = [ctx.expand(s) for s in node.pos[0]]
        if matcher.kind == "count":
            sources = [s for s in sources if s]  # RFC 5229 5: empty strings are not counted
        return matcher.test(ctx, sources)
    if name == "body":
        return matcher.test(ctx, _body_parts(ctx, node))
    if name == "spamtest":
        # RFC 5235 3.1: this server's verdict only (the Envelope's), never the header
        verdict = ctx.envelope.spam
        level, percent = verdict.levels() if verdict is not None else (0, 0)
        return matcher.test(ctx, [str(percent if ":percent" in t else level)])
    if name == "valid_notify_method":
        # RFC 5435 5: true when every URI is one this implementation can send
        return all(_valid_method(ctx.expand(u)) for u in node.pos[0])
    if name == "notify_method_capability":
        # RFC 5436 2.2: whether a mailto recipient is "online" is never known: "maybe"
        if not _valid_method(ctx.expand(node.pos[0])) or ctx.expand(node.pos[1]).lower() != "online":
            return False
        return matcher.test(ctx, ["maybe"])
    if name == "mailboxexists":
        if ctx.mailbox_exists is None:
            return False
        return all(ctx.mailbox_exists(ctx.expand(m)) for m in node.pos[0])
    raise SieveRuntimeError(f"unknown test {name}")


def _valid_method(uri: str) -> bool:
    try:
        parse_mailto(uri)
    except ValueError:
        return False
    return True


DUPLICATE_SECONDS = 7 * 86400  # RFC 7352 3.2: the site's default period
MAX_DUPLICATE_SECONDS = 90 * 86400


def _duplicate(ctx: _Context, node: Node) -> bool:
    """RFC 7352 3: whether a message with this id (the Message-ID, or
    :header's field, or :uniqueid) was seen for this :handle within the
    period; the id is recorded when the delivery succeeds. No id: false."""
    t = node.tags
    if ":uniqueid" in t:
        ident = ctx.expand(t[":uniqueid"])
    else:
        values = ctx.msg.headers(ctx.expand(t.get(":header", "message-id")))
        if not values:
            return False
        ident = " ".join(values[0].split())
        if ":header" not in t:
            ident = ident.strip("<>").strip()  # RFC 7352 3.1: the Message-ID without its angle brackets
    if not ident:
        return False
    handle = ctx.expand(t.get(":handle", ""))
    seconds = min(int(t.get(":seconds", DUPLICATE_SECONDS)), MAX_DUPLICATE_SECONDS)
    seen = ctx.duplicate_seen(handle, ident) if ctx.duplicate_seen is not None else False
    seen = seen or any(d.handle == handle and d.id == ident for d in ctx.result.duplicates)
    if not seen or ":last" in t:
        ctx.result.duplicates.append(DuplicateMark(handle, ident, seconds, ":last" in t))
    return seen


def _indexed(ctx: _Context, node: Node, matcher: Matcher) -> bool:
    """RFC 5260 6: only the ``:index``-th field of those named (counted
    from the end with ``:last``), in the order they stand in the header."""
    named = [node.pos[0]] if node.name == "date" else node.pos[0]
    names = {ctx.expand(h).lower() for h in named}
    fields = [(n, v) for n, v in ctx.msg.fields if n in names]
    i = matcher.index or 1
    if i > len(fields):
        return False
    fname, raw = fields[-i] if matcher.last else fields[i - 1]
    if node.name == "header":
        return matcher.test(ctx, [decode_words(bytes_to_text(raw))])
    if node.name == "date":
        return _date_test(ctx, node, matcher, bytes_to_text(raw))
    values: list[str] = []
    try:
        items = parse_address_list(bytes_to_text(raw))
    except Exception:  # noqa: BLE001 - an unparsable field has no address to test
        items = []
    for item in items:
        for box in item.mailboxes if isinstance(item, Group) else (item,):
            value = address_part(box, matcher.part, ctx.limits.separator)
            if value is not None:
                values.append(value)
    return matcher.test(ctx, values)


def _zone(text: str) -> timezone:
    sign = -1 if text[0] == "-" else 1
    return timezone(sign * timedelta(hours=int(text[1:3]), minutes=int(text[3:5])))


def _date_part(when: datetime, part: str) -> str:
    """RFC 5260 4.2 date-parts."""
    if part == "year":
        return f"{when.year:04d}"
    if part == "month":
        return f"{when.month:02d}"
    if part == "day":
        return f"{when.day:02d}"
    if part == "date":
        return when.strftime("%Y-%m-%d")
    if part == "julian":
        # the Modified Julian Day: days since 1858-11-17
        return str((when.date() - datetime(1858, 11, 17).date()).days)
    if part == "hour":
        return f"{when.hour:02d}"
    if part == "minute":
        return f"{when.minute:02d}"
    if part == "second":
        return f"{when.second:02d}"
    if part == "time":
        return when.strftime("%H:%M:%S")
    if part == "iso8601":
        return when.isoformat(timespec="seconds")
    if part == "std11":
        return format_datetime(when)
    if part == "zone":
        offset = when.utcoffset() or timedelta(0)
        minutes = int(offset.total_seconds() // 60)
        return f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    if part == "weekday":
        return str((when.weekday() + 1) % 7)  # 0 is Sunday
    raise SieveRuntimeError(f"unknown date part {part!r}")


def _date_test(ctx: _Context, node: Node, matcher: Matcher, field: str | None) -> bool:
    """RFC 5260 4 (date) and 5 (currentdate): a part of a date, in the zone
    asked for (``:zone``), the field's own (``:originalzone``) or the
    server's."""
    t = node.tags
    part = ctx.expand(node.pos[-2]).lower()
    zone_text = ctx.expand(t[":zone"]) if ":zone" in t else None
    if zone_text is not None and not re.fullmatch(r"[+-][0-9]{4}", zone_text):
        return False
    zone = _zone(zone_text) if zone_text is not None else None
    if node.name == "currentdate":
        when = datetime.fromtimestamp(ctx.now, zone or UTC)
        if zone is None:
            when = when.astimezone()
        return matcher.test(ctx, [_date_part(when, part)])
    header = ctx.expand(node.pos[0]).lower()
    raws = ctx.msg.raw_headers(header) if field is None else [field]
    values: list[str] = []
    for raw in raws:
        text = " ".join(raw.split())
        if header == "received":
            text = text.rpartition(";")[2].strip()  # RFC 5260 4.1: the date after the last ";"
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            continue  # RFC 5260 4: a field that holds no date does not match
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if zone is not None:
            when = when.astimezone(zone)
        elif ":originalzone" not in t:
            when = when.astimezone()
        values.append(_date_part(when, part))
    return matcher.test(ctx, values)


def _body_parts(ctx: _Context, node: Node) -> list[str]:
    """RFC 5173 5: :raw the undecoded body; :text (the default) the decoded
    text/* parts; :content the decoded parts of the given types. Of the
    MIME parts only the first ``Limits.max_body_parts`` are looked at (RFC
    5173 sets no bound; a body test's cost is the server's to bound, the
    message being the sender's), each decoded once per message
    (``SieveMessage``) and the clock looked at before each."""
    t = node.tags
    if ":raw" in t:
        return [bytes_to_text(ctx.msg.body_raw)]
    if ":content" in t:
        wanted = [ctx.expand(c).lower() for c in t[":content"]]
    else:
        wanted = ["text"]
    out: list[str] = []
    for index, part in enumerate(ctx.msg.source.body_parts(ctx.limits, ctx.deadline)):
        ctx.step()
        ctx.check_time()
        ctype = part.get_content_type().lower()
        if part.is_multipart():
            # RFC 5173 5.2: a multipart is matched by its prologue and epilogue only
            if any(w and (ctype == w or ctype.split("/")[0] == w) for w in wanted):
                out.append((part.preamble or "") + (part.epilogue or ""))
            continue
        if not any(w == "" or ctype == w or ("/" not in w and ctype.split("/")[0] == w) for w in wanted):
            continue
        content = ctx.msg.source.content(index, part)
        if content is not None:
            out.append(content)
    return out


def run(script: Script, message: bytes | SieveMessage, envelope: Envelope, limits: Limits | None = None, *,
        mailbox_exists: Callable[[str], bool] | None = None, now: float | None = None,
        include: Callable[[str, str], Script | None] | None = None,
        duplicate_seen: Callable[[str, str], bool] | None = None) -> Result:
    """Run ``script`` on ``message`` (the bytes as delivered, or a
    ``SieveMessage`` shared by the runs for each recipient) for ``envelope``.

    Returns the actions; the implicit keep is in them as a trailing ``Keep``
    when no action cancelled it. Raises ``SieveRuntimeError`` when the run
    fails (a limit, conflicting actions): the caller then keeps the message.
    ``mailbox_exists`` answers the ``mailboxexists`` test (RFC 5490 3.1);
    ``now`` is the time ``currentdate`` sees (RFC 5260 5), by default the clock's;
    ``include(location, name)`` gives the compiled script an ``include``
    names ("personal" or "global"), None when there is none (RFC 6609);
    ``duplicate_seen(handle, id)`` answers whether an id is recorded within
    its period (RFC 7352); the ids to record are ``Result.duplicates``.
    """
    if not isinstance(message, SieveMessage):
        message = SieveMessage(message)
    ctx = _Context(script, message, envelope, limits or Limits(), mailbox_exists)
    ctx.now = time.time() if now is None else now
    ctx.include_loader = include
    ctx.duplicate_seen = duplicate_seen
    try:
        _top(ctx, script)
    except (_Stop, _Return):
        pass
    except RecursionError as exc:
        raise SieveRuntimeError("the script nests too deeply") from exc
    result = ctx.result
    if ctx.msg.edited:
        result.message = ctx.msg.raw
    if result.implicit_keep:
        # RFC 5232 3: the implicit keep files with the current flags
        keep = Keep(tuple(ctx.flags))
        if not any(isinstance(a, Keep) or (isinstance(a, FileInto) and _same_mailbox(a.mailbox, "INBOX"))
                   for a in result.actions):
            result.actions.append(keep)
    return result
