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

``SieveMessage`` is the message as the runs of one delivery share it (the
header split and the MIME parse done once for every recipient's script);
``run`` takes it or the bytes. The caller chooses where a run happens (the
delivery runs it in a thread, delivery/sieve.py): nothing here does I/O.

What each action becomes (``Result.actions``, in order, duplicates merged
as RFC 5228 2.10.3 asks): ``Keep`` (into the INBOX, with IMAP flags of RFC
5232), ``FileInto`` (a mailbox, with flags, ``:create`` of RFC 5490),
``Redirect`` (RFC 5228 4.2, ``:copy`` of RFC 3894), ``Reject`` (RFC 5429),
``Vacation`` (RFC 5230: whether to answer is for vacation.py to decide),
``Discard``. The implicit keep (RFC 5228 2.10.2) is a ``Keep`` added at the
end when no action cancelled it.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import quote

import regex

from ..message.address import Group, Mailbox, parse_address_list
from ..message.headers import bytes_to_text, decode_words, split_fields
from ..message.parse import SteppedParse, split_header_body
from .errors import SieveRuntimeError
from .mailto import parse_mailto
from .parser import FIELD_NAME, PROTECTED_FIELDS, Node, Script, compile_regex

# ---------------------------------------------------------------------------
# actions


@dataclass(frozen=True)
class Keep:
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileInto:
    mailbox: str
    flags: tuple[str, ...] = ()
    create: bool = False
    copy: bool = False


@dataclass(frozen=True)
class Redirect:
    address: str
    copy: bool = False


@dataclass(frozen=True)
class Reject:
    reason: str
    extended: bool = False  # ereject: refuse at SMTP time where possible (RFC 5429 2.1)


@dataclass(frozen=True)
class Discard:
    pass


@dataclass(frozen=True)
class Vacation:
    reason: str
    subject: str | None = None
    from_: str | None = None
    addresses: tuple[str, ...] = ()
    seconds: int = 7 * 86400  # RFC 5230 4.1: :days defaults to 7
    mime: bool = False
    handle: str = ""


@dataclass(frozen=True)
class Notify:
    """An ``enotify`` notification (RFC 5435 3): ``method`` a mailto URI
    (RFC 5436), sent once the delivery is durable (delivery/submit.py)."""

    method: str
    from_: str | None = None
    importance: str = "2"  # RFC 5435 3.6: 1 high, 2 normal, 3 low
    options: tuple[str, ...] = ()
    message: str | None = None


Action = Keep | FileInto | Redirect | Reject | Discard | Vacation | Notify


@dataclass(frozen=True)
class SpamVerdict:
    """This server's spam verdict on one account's copy: the ``score``,
    the account's threshold ``required``, and whether the copy was judged
    spam (True / False; None: only the score is known)."""

    score: float
    required: float = 5.0
    spam: bool | None = None

    def levels(self) -> tuple[int, int]:
        """(spamtest 0..10, spamtest :percent 0..100): see ``spam_levels``."""
        return _levels(self.spam, self.score, self.required)


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope of the delivery (RFC 5228 5.4): ``from_`` the
    reverse-path ("" for the null sender), ``to`` the recipient address as
    given in RCPT (before plus-addressing is stripped, so ``:detail`` sees
    the tag). ``spam``: this server's verdict on the copy, the only thing
    ``spamtest`` reads (RFC 5235 3.1: None is "not tested", 0); X-Spam-*
    fields in the message are never trusted, since a sender can write them."""

    from_: str
    to: str
    spam: SpamVerdict | None = None


@dataclass(frozen=True)
class Limits:
    """Bounds on one run. ``separator`` is the subaddress delimiter (RFC
    5233 ``:user``/``:detail``), "" for none."""

    max_seconds: float = 1.0
    max_steps: int = 100_000
    max_actions: int = 32
    max_redirects: int = 4
    max_value_chars: int = 64 * 1024  # a header value or body part is cut here before matching
    min_vacation_seconds: int = 3600
    max_vacation_seconds: int = 90 * 86400
    separator: str = "+"
    max_notifications: int = 3  # notify actions kept per message (RFC 5435 3.9), more are dropped
    max_header_edits: int = 64  # addheader / deleteheader commands run (RFC 5293)
    # The MIME parts (the message, multiparts and leaves, in the order RFC
    # 5173 5 walks them) a body test looks at; parts after these are not
    # seen, as if the message ended there. Parsing costs about 0.2 ms a part:
    # 1,000 is far more than mail has and a bounded cost for mail made to be
    # parsed (50,000 parts took 10 s).
    max_body_parts: int = 1000


@dataclass(frozen=True)
class DuplicateMark:
    """A ``duplicate`` test's id to record once the delivery succeeded
    (RFC 7352 3: the record is kept only when the script completes)."""

    handle: str
    id: str
    seconds: int
    last: bool  # :last: the period counts from this message


@dataclass
class Result:
    actions: list[Action] = field(default_factory=list)
    implicit_keep: bool = True
    duplicates: list[DuplicateMark] = field(default_factory=list)
    # RFC 5293: the message as editheader left it (None: unchanged); what
    # keep, fileinto and redirect deliver
    message: bytes | None = None

    def describe(self) -> list[str]:
        """One line per action, for the CLI and logs."""
        out = []
        for a in self.actions:
            if isinstance(a, Keep):
                out.append("keep" + (f" flags={' '.join(a.flags)}" if a.flags else ""))
            elif isinstance(a, FileInto):
                extra = (" :create" if a.create else "") + (f" flags={' '.join(a.flags)}" if a.flags else "")
                out.append(f"fileinto {a.mailbox!r}{extra}")
            elif isinstance(a, Redirect):
                out.append(f"redirect {a.address!r}" + (" :copy" if a.copy else ""))
            elif isinstance(a, Reject):
                out.append(("ereject " if a.extended else "reject ") + repr(a.reason))
            elif isinstance(a, Discard):
                out.append("discard")
            elif isinstance(a, Vacation):
                out.append(f"vacation days={a.seconds / 86400:g} subject={a.subject!r} handle={a.handle!r}")
            elif isinstance(a, Notify):
                extra = (f" from={a.from_!r}" if a.from_ else "") + (f" message={a.message!r}" if a.message else "")
                out.append(f"notify {a.method!r} importance={a.importance}{extra}")
        return out


# ---------------------------------------------------------------------------
# comparators and match types (RFC 5228 2.7, RFC 4790, RFC 5231)

_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _fold(comparator: str, s: str) -> str:
    if comparator != "i;ascii-casemap":
        return s
    return s.lower() if s.isascii() else s.translate(_ASCII_FOLD)


def _numeric(s: str) -> float:
    """RFC 4790 9.1: the leading digits as a number; none is positive infinity."""
    m = re.match(r"[0-9]+", s)
    return int(m.group()) if m else float("inf")


def _relate(op: str, a: object, b: object) -> bool:
    return {
        "gt": lambda: a > b, "ge": lambda: a >= b, "lt": lambda: a < b,  # type: ignore[operator]
        "le": lambda: a <= b, "eq": lambda: a == b, "ne": lambda: a != b,  # type: ignore[operator]
    }[op]()


def _glob_regex(pattern: str) -> regex.Pattern[str]:
    """RFC 5228 2.7.1 :matches: ``*`` any sequence, ``?`` one character,
    ``\\`` quotes the next; each wildcard a group (RFC 5229 3.2 captures),
    matching as little as possible. The ``regex`` module's, so that a search
    can be given a timeout (lazy groups can backtrack for long)."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(regex.escape(pattern[i]))
        elif c == "*":
            out.append("(.*?)")
        elif c == "?":
            out.append("(.)")
        else:
            out.append(regex.escape(c))
        i += 1
    return regex.compile("".join(out), regex.DOTALL)


def _glob_match(toks: list[str | None], value: str, deadline: float = float("inf")) -> bool:
    """Whether ``value`` matches the wildcard pattern ``toks`` (_glob_tokens),
    by the classic single-backtrack algorithm (patterns without ``?`` take
    the str.find path). Its time is at worst the pattern's length times the
    value's (402 characters against 64 KB: 4 s), so it looks at the clock
    every few thousand steps and raises ``SieveRuntimeError`` past
    ``deadline`` (RFC 5228 2.10.6: the run fails, the message is kept)."""
    if "\0?" not in toks:
        return _star_match(_pieces(toks), value)
    p = v = 0
    star = -1
    mark = 0
    n = 0
    while v < len(value):
        n += 1
        if not n & 0xFFF and time.monotonic() > deadline:
            raise SieveRuntimeError("the script ran too long")
        if p < len(toks) and toks[p] is not None and (toks[p] == "\0?" or toks[p] == value[v]):
            p += 1
            v += 1
        elif p < len(toks) and toks[p] is None:
            star = p
            mark = v
            p += 1
        elif star >= 0:
            p = star + 1
            mark += 1
            v = mark
        else:
            return False
    while p < len(toks) and toks[p] is None:
        p += 1
    return p == len(toks)


def _pieces(toks: list[str | None]) -> list[str]:
    pieces: list[str] = [""]
    for t in toks:
        if t is None:
            pieces.append("")
        else:
            pieces[-1] += t
    return pieces


def _star_match(pieces: list[str], value: str) -> bool:
    """A pattern of literals and ``*`` only (``pieces``: the literals between
    the stars): each found in order (the leftmost place is always right)."""
    if len(pieces) == 1:
        return value == pieces[0]
    first, last = pieces[0], pieces[-1]
    if len(first) + len(last) > len(value) or not value.startswith(first) or not value.endswith(last):
        return False
    pos, end = len(first), len(value) - len(last)
    for piece in pieces[1:-1]:
        found = value.find(piece, pos, end)
        if found < 0:
            return False
        pos = found + len(piece)
    return True


def _glob_tokens(pattern: str) -> list[str | None]:
    """A :matches pattern as tokens: None for ``*``, "\\0?" for ``?``, else one literal character."""
    toks: list[str | None] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            i += 1
            toks.append(pattern[i])
        elif c == "*":
            toks.append(None)
        elif c == "?":
            toks.append("\0?")
        else:
            toks.append(c)
        i += 1
    return toks


REGEX_SECONDS = 0.1  # one :regex search, at most


class _Pieces(list):
    """The literals between the stars of a pattern without ``?``."""


def _prepare_glob(pattern: str) -> list:
    toks = _glob_tokens(pattern)
    return _Pieces(_pieces(toks)) if "\0?" not in toks else toks


class _Matcher:
    """A test's comparator and match type, prepared once per compiled test
    (kept on the node) and applied to values and keys."""

    def __init__(self, node: Node, variables_on: bool) -> None:
        self.comparator = node.tags.get(":comparator", "i;ascii-casemap")
        self.variables_on = variables_on
        self.dynamic_rel = False
        if ":count" in node.tags or ":value" in node.tags:
            self.kind = "count" if ":count" in node.tags else "value"
            rel = node.tags[":" + self.kind]
            self.dynamic_rel = variables_on and "${" in rel
            self.rel = rel.lower()
        else:
            self.kind = next((t[1:] for t in (":is", ":contains", ":matches", ":regex") if t in node.tags), "is")
            self.rel = ""
        self.index: int | None = node.tags.get(":index")
        self.last = ":last" in node.tags
        self.part = next((p[1:] for p in (":all", ":localpart", ":domain", ":user", ":detail") if p in node.tags),
                         "all")
        keys = node.pos[-1]
        self.static = not (variables_on and any("${" in k for k in keys))
        self.keys: list[str] = list(keys)
        self.folded = [_fold(self.comparator, k) for k in keys] if self.static else []
        self.globs = [_prepare_glob(k) for k in self.folded] if self.static and self.kind == "matches" else []
        self.regexes = ([compile_regex(k, self.comparator) for k in self.keys]
                        if self.static and self.kind == "regex" else [])
        self.fast = _fast_test(node, self, variables_on)

    def test(self, ctx: _Context, values: Iterable[str]) -> bool:
        if self.static:
            keys, folded, globs = self.keys, self.folded, self.globs
        else:
            keys = [ctx.expand(k) for k in self.keys]
            folded = [_fold(self.comparator, k) for k in keys]
            globs = [_prepare_glob(k) for k in folded] if self.kind == "matches" else []
        rel = ctx.expand(self.rel).lower() if self.dynamic_rel else self.rel
        if self.kind == "regex":
            return self.test_regex(ctx, values, keys)
        if self.kind == "count":
            n = str(sum(1 for _ in values))
            return any(self.compare_value(rel, n, k) for k in keys)
        limit = ctx.limits.max_value_chars
        if self.static and self.kind in ("is", "contains") and self.comparator != "i;ascii-numeric":
            # the plain cases without a per-pair step (one step per value and key still counted)
            ctx.steps += len(values) * len(folded) if isinstance(values, list) else 0
            ctx.step()
            for value in values:
                fv = _fold(self.comparator, value[:limit])
                if self.kind == "is":
                    if fv in folded:
                        return True
                elif any(k in fv for k in folded):
                    return True
            return False
        for value in values:
            value = value[:limit]
            fv = _fold(self.comparator, value) if self.kind != "value" else value
            for i, key in enumerate(keys):
                ctx.step()
                if self.kind == "value":
                    if self.compare_value(rel, value, key):
                        return True
                elif self.comparator == "i;ascii-numeric":
                    # RFC 4790 9.1: i;ascii-numeric offers equality and ordering only
                    if self.kind == "is" and _numeric(value) == _numeric(key):
                        return True
                elif self.kind == "is":
                    if fv == folded[i]:
                        return True
                elif self.kind == "contains":
                    if folded[i] in fv:
                        return True
                elif (_star_match(globs[i], fv) if isinstance(globs[i], _Pieces)
                      else _glob_match(globs[i], fv, ctx.deadline)):
                    if self.variables_on:
                        try:
                            m = _glob_regex(folded[i]).fullmatch(fv, timeout=ctx.budget())
                        except TimeoutError:
                            raise SieveRuntimeError("the script ran too long") from None
                        if m is not None:  # RFC 5229 3.2: ${0} the whole value, ${1}... each wildcard
                            ctx.match_vars = [value] + [value[a:b] for a, b in
                                                        (m.span(g) for g in range(1, (m.lastindex or 0) + 1))]
                    return True
        return False

    def test_regex(self, ctx: _Context, values: Iterable[str], keys: list[str]) -> bool:
        """:regex (draft-ietf-sieve-regex): a search anywhere in the value;
        ${0} the match, ${1}... its groups. Each search is cut off at the
        run's deadline (at most REGEX_SECONDS), so a pathological expression
        fails the run (the message is kept) instead of holding the server."""
        if self.comparator == "i;ascii-numeric":
            return False
        try:
            patterns = self.regexes if self.static else [compile_regex(k, self.comparator) for k in keys]
        except regex.error as exc:
            raise SieveRuntimeError(f"bad regular expression: {exc}") from None
        limit = ctx.limits.max_value_chars
        for value in values:
            value = value[:limit]
            for rx in patterns:
                ctx.step()
                budget = min(REGEX_SECONDS, ctx.budget())
                try:
                    m = rx.search(value, timeout=budget)
                except TimeoutError:
                    raise SieveRuntimeError("a regular expression took too long") from None
                if m is not None:
                    if ctx.variables_on:
                        ctx.match_vars = [m.group(0)] + [g or "" for g in m.groups()[:9]]
                    return True
        return False

    def compare_value(self, rel: str, value: str, key: str) -> bool:
        if self.comparator == "i;ascii-numeric":
            return _relate(rel, _numeric(value), _numeric(key))
        return _relate(rel, _fold(self.comparator, value), _fold(self.comparator, key))


# ---------------------------------------------------------------------------
# the message as tests see it


def _fast_test(node: Node, m: _Matcher, variables_on: bool) -> Callable[[_Context], bool] | None:
    """The common tests (``header`` / ``address`` with literal names and
    keys, :is, :contains or a :matches without ``?``, no :index, no
    captures) as one closure over the message view's folded values, cached
    per message: what a long list of simple rules costs at each delivery.
    None: the general path."""
    if not m.static or m.index is not None or m.comparator == "i;ascii-numeric" or node.name not in ("header",
                                                                                                     "address"):
        return None
    if m.kind not in ("is", "contains", "matches"):
        return None
    if m.kind == "matches" and (variables_on or not all(isinstance(g, _Pieces) for g in m.globs)):
        return None
    names = tuple(n.lower() for n in node.pos[0])
    if variables_on and any("${" in n for n in names):
        return None
    comparator, part, n_keys = m.comparator, m.part, len(m.folded)
    key = (node.name, names, comparator, part)

    def values(ctx: _Context) -> list[str]:
        vals = ctx.msg._folded.get(key)
        if vals is None:
            vals = ctx.msg.folded(key, ctx.limits)
        # the test's own step and one per value and key, as the general path counts them
        ctx.steps += len(vals) * n_keys + 1
        ctx.step()
        return vals

    if m.kind == "is":
        keys = frozenset(m.folded)

        def test_is(ctx: _Context) -> bool:
            vals = values(ctx)
            return not keys.isdisjoint(vals)
        return test_is
    if m.kind == "contains":
        ckeys = tuple(m.folded)

        def test_contains(ctx: _Context) -> bool:
            vals = values(ctx)
            return any(k in v for v in vals for k in ckeys)
        return test_contains
    globs = tuple(m.globs)

    def test_matches(ctx: _Context) -> bool:
        vals = values(ctx)
        return any(_star_match(g, v) for v in vals for g in globs)
    return test_matches


def _contains(values: list[str], keys: tuple[str, ...]) -> bool:
    for v in values:
        for k in keys:
            if k in v:
                return True
    return False


def _matches(values: list[str], globs: tuple) -> bool:
    for v in values:
        for g in globs:
            if _star_match(g, v):
                return True
    return False


@dataclass
class _Segment:
    """A run of top-level ``if`` commands (one branch each) whose tests are
    all fast tests, ``size`` and ``allof``/``anyof``/``not`` of them,
    evaluated by one generated function: ``find(values, size, start)``
    gives the index (from the segment's start) of the first rule at or
    after ``start`` whose test is true, or the segment's length."""

    start: int
    end: int
    keys: list[tuple]
    find: Callable[[list[list[str]], int, int], int]
    cost: int  # steps charged per rule evaluated (the tests and keys it holds)


_NO_CHAIN = frozenset({"addheader", "deleteheader", "include"})


def _chain_plan(script: Script) -> list[_Segment] | None:
    """The segments of ``script`` (cached on it); None when the script uses
    what could change the values between rules (variables, editheader) or
    has no rule that fits. Generated code is built only from indices and
    constants kept apart from the source text (no script text is in it)."""
    plan = getattr(script, "_chain", False)
    if plan is not False:
        return plan
    result: list[_Segment] | None = None
    if "variables" not in script.require and not (script.names & _NO_CHAIN):
        result = []
        run_start = None
        cmds = script.commands
        for i in range(len(cmds) + 1):
            ok = i < len(cmds) and cmds[i].name == "if" and len(cmds[i].branches) == 1 and \
                _chainable(cmds[i].branches[0][0])
            if ok and run_start is None:
                run_start = i
            elif not ok and run_start is not None:
                if i - run_start >= 4:
                    result.append(_build_segment(cmds, run_start, i))
                run_start = None
        result = result or None
    script._chain = result  # type: ignore[attr-defined]
    return result


def _chainable(node: Node | None) -> bool:
    if node is None:
        return False
    if node.name in ("allof", "anyof", "not"):
        return all(_chainable(t) for t in node.tests)
    if node.name == "size":
        return True
    if node.name not in ("header", "address"):
        return False
    m = node.prepared if node.prepared is not None else _Matcher(node, False)
    node.prepared = m
    return m.fast is not None


def _build_segment(cmds: list[Node], start: int, end: int) -> _Segment:
    keys: list[tuple] = []
    consts: dict[str, object] = {"_contains": _contains, "_matches": _matches}
    cost = 0

    def expr(node: Node) -> str:
        nonlocal cost
        cost += 1
        if node.name == "not":
            return f"(not {expr(node.tests[0])})"
        if node.name in ("allof", "anyof"):
            # the tests have no effect but their answer: the cheap ones first
            joiner = " and " if node.name == "allof" else " or "
            return "(" + joiner.join(expr(t) for t in sorted(node.tests, key=_weight)) + ")"
        if node.name == "size":
            if ":over" in node.tags:
                return f"(size > {int(node.tags[':over'])})"
            return f"(size < {int(node.tags[':under'])})"
        m: _Matcher = node.prepared
        names = tuple(n.lower() for n in node.pos[0])
        key = (node.name, names, m.comparator, m.part)
        if key not in keys:
            keys.append(key)
        v = f"v{keys.index(key)}"
        c = f"c{len(consts)}"
        cost += len(m.folded)
        if m.kind == "is":
            consts[c] = frozenset(m.folded)
            return f"(not {c}.isdisjoint({v}))"
        if m.kind == "contains":
            consts[c] = tuple(m.folded)
            return f"_contains({v}, {c})"
        if all(len(g) == 3 and not g[0] and not g[2] for g in m.globs):
            consts[c] = tuple(g[1] for g in m.globs)  # "*text*" is "contains text"
            return f"_contains({v}, {c})"
        consts[c] = tuple(m.globs)
        return f"_matches({v}, {c})"

    lines = []
    for i in range(start, end):
        test = cmds[i].branches[0][0]
        assert test is not None
        lines.append(f"    if start <= {i - start} and {expr(test)}: return {i - start}")
    head = "def find(values, size, start):\n"
    if keys:
        head += "    " + "".join(f"v{k}, " for k in range(len(keys))) + "= values\n"
    source = head + "\n".join(lines) + f"\n    return {end - start}\n"
    namespace: dict[str, object] = dict(consts)
    exec(compile(source, "<sieve rules>", "exec"), namespace)  # noqa: S102 - built from indices and names above
    per_rule = max(1, cost // max(1, end - start))
    return _Segment(start, end, keys, namespace["find"], per_rule + 1)  # type: ignore[arg-type]


def _weight(node: Node) -> int:
    if node.name == "size":
        return 0
    if node.name in ("header", "address"):
        return {"is": 1, "contains": 2}.get(node.prepared.kind, 3)
    return 4


def _top(ctx: _Context, script: Script) -> None:
    """The script's commands, each run of simple rules through its
    generated function (``_chain_plan``), the rest one by one."""
    plan = _chain_plan(script)
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


class SieveMessage:
    """A message as the Sieve runs of one delivery share it (``run`` takes
    it or the bytes): the header split once, and the MIME parse a ``body``
    test needs (RFC 5173) done at most once whatever the number of
    recipients' scripts, with each part's decoded content.

    The parse goes a slice at a time (message/parse.py ``SteppedParse``)
    under the deadline of the run that needs it; a run out of time fails
    (RFC 5228 2.10.6) and leaves the rest to the next run that asks. It
    builds at most ``Limits.max_body_parts`` parts (plus a slice's worth)
    and keeps of a part's lines the first ``16 * max_value_chars`` octets
    (enough to decode the ``max_value_chars`` characters a test compares,
    whatever the encoding). Meant for runs with the same ``Limits``; one
    run at a time."""

    def __init__(self, raw: bytes) -> None:
        # made on the event loop for every delivery while Sieve is on, used
        # only by a run (in a thread): the header is split there, on first use
        self.raw = raw
        self._parse: SteppedParse | None = None
        self._parts: list[EmailMessage] | None = None
        self._contents: dict[int, str | None] = {}

    @functools.cached_property
    def _split(self) -> tuple[list[tuple[str, bytes]], bytes]:
        header, body = split_header_body(self.raw)
        return split_fields(header), body

    @property
    def fields(self) -> list[tuple[str, bytes]]:
        """The header fields: (name as written, raw value)."""
        return self._split[0]

    @property
    def body_raw(self) -> bytes:
        return self._split[1]

    def body_parts(self, limits: Limits, deadline: float) -> list[EmailMessage]:
        """The first ``limits.max_body_parts`` MIME parts, in ``walk`` order;
        ``SieveRuntimeError`` when the parse does not end by ``deadline``."""
        if self._parts is None:
            if self._parse is None:
                self._parse = SteppedParse(self.raw, max_parts=limits.max_body_parts,
                                           max_run=16 * limits.max_value_chars)
            while not self._parse.step():
                if time.monotonic() > deadline:
                    raise SieveRuntimeError("the script ran too long")
            assert self._parse.message is not None
            parts: list[EmailMessage] = []
            for part in self._parse.message.walk():
                if len(parts) >= limits.max_body_parts:
                    break
                parts.append(part)  # type: ignore[arg-type]
            self._parts = parts
        return self._parts

    def content(self, index: int, part: EmailMessage) -> str | None:
        """The decoded content of the ``index``-th part (a broken transfer
        encoding: the raw text); None when it is no text."""
        if index not in self._contents:
            try:
                content = part.get_content()
            except Exception:  # noqa: BLE001 - a broken transfer encoding: the raw text
                content = part.get_payload()
            if isinstance(content, bytes):
                content = bytes_to_text(content)
            self._contents[index] = content if isinstance(content, str) else None
        return self._contents[index]


class _MessageView:
    """The message one run sees: the shared ``SieveMessage`` until
    editheader (RFC 5293) changes the header, then a copy of its own."""

    def __init__(self, message: SieveMessage) -> None:
        self.source = message
        self.raw = message.raw
        self.body_raw = message.body_raw
        self.original = message.fields  # (name as written, raw value): what editheader changes
        self.fields = [(name.lower(), value) for name, value in self.original]
        self.edited = False
        self._headers: dict[str, list[str]] = {}
        self._addresses: dict[tuple[str, str, str], list[str]] = {}
        self._folded: dict[tuple, list[str]] = {}

    def folded(self, key: tuple, limits: Limits) -> list[str]:
        """The values a fast test compares (``_fast_test``): the fields'
        decoded values or the addresses' parts, cut and folded, once per
        message and key."""
        hit = self._folded.get(key)
        if hit is None:
            kind, names, comparator, part = key
            limit = limits.max_value_chars
            raw: list[str] = []
            for name in names:
                raw += self.headers(name) if kind == "header" else self.addresses(name, part, limits.separator)
            hit = self._folded[key] = [_fold(comparator, v[:limit]) for v in raw]
        return hit

    def edit(self, original: list[tuple[str, bytes]]) -> None:
        """Replace the header fields (RFC 5293): later tests see the new ones."""
        self.original = original
        self.fields = [(name.lower(), value) for name, value in original]
        self.edited = True
        self._headers.clear()
        self._addresses.clear()
        self._folded.clear()
        self.raw = b"".join(n.encode("ascii") + b": " + v + b"\r\n" for n, v in original) + b"\r\n" + self.body_raw
        self.source = SieveMessage(self.raw)  # the body tests see the edited header (Content-Type)

    def headers(self, name: str) -> list[str]:
        """The values of the fields named ``name``, unfolded and RFC 2047
        decoded (RFC 5228 2.7.2), leading and trailing white space removed."""
        name = name.lower()
        hit = self._headers.get(name)
        if hit is None:
            hit = self._headers[name] = [decode_words(bytes_to_text(v)) for n, v in self.fields if n == name]
        return hit

    def addresses(self, name: str, part: str, separator: str) -> list[str]:
        """The ``part`` of each address in the fields named ``name`` (RFC
        5228 5.1); a part that names nothing (``:detail`` without a
        separator) is left out."""
        key = (name.lower(), part, separator)
        hit = self._addresses.get(key)
        if hit is not None:
            return hit
        out: list[str] = []
        for raw in self.raw_headers(name):
            try:
                items = parse_address_list(raw)
            except Exception:  # noqa: BLE001 - an unparsable field has no address to test
                continue
            for item in items:
                for box in item.mailboxes if isinstance(item, Group) else (item,):
                    value = _address_part(box, part, separator)
                    if value is not None:
                        out.append(value)
        self._addresses[key] = out
        return out

    def raw_headers(self, name: str) -> list[str]:
        name = name.lower()
        return [bytes_to_text(v) for n, v in self.fields if n == name]



_SCORE = re.compile(r"\bscore=(-?[0-9]+(?:\.[0-9]+)?)", re.IGNORECASE)
_REQUIRED = re.compile(r"\brequired=(-?[0-9]+(?:\.[0-9]+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"\s*(-?[0-9]+(?:\.[0-9]+)?)")


def spam_levels(status: str | None, score: str | None, required: float = 5.0) -> tuple[int, int]:
    """A spam verdict header as written at delivery (SpamAssassin's
    ``X-Spam-Status: Yes, score=S required=R tests=...``, or only
    ``X-Spam-Score: S``) as the values of RFC 5235's tests; ``spamtest``
    itself maps the delivery's ``SpamVerdict`` the same way, not a header.

    ``spamtest`` (RFC 5235 3.1): 0 when no verdict header is there (not
    tested); else 1 + floor(5 * S / R) kept within 1..10, so a score of 0
    or less is 1 (clear), the threshold R is 6 and twice the threshold or
    more is 10 (certainly spam); a "Yes" verdict is at least 6 and a "No"
    at most 5 whatever the numbers say.
    ``spamtest :percent`` (RFC 5235 3.2): round(50 * S / R) within 0..100,
    so the threshold is 50 % and twice it 100 %; no verdict is 0.
    R is the header's ``required=``, else ``required``."""
    verdict, s, r = _parse_verdict(status, score, required)
    return _levels(verdict, s, r)


def _parse_verdict(status: str | None, score: str | None, required: float) -> tuple[bool | None, float | None, float]:
    """(Yes / No / neither, the score if any, the threshold) of the header forms ``spam_levels`` reads."""
    verdict: bool | None = None
    s: float | None = None
    r = required
    if status is not None:
        text = " ".join(status.split())
        head = text.split(",", 1)[0].strip().lower()
        verdict = True if head == "yes" else False if head == "no" else None
        m = _SCORE.search(text)
        if m:
            s = float(m.group(1))
        m = _REQUIRED.search(text)
        if m:
            r = float(m.group(1))
    if s is None and score is not None:
        m = _NUMBER.match(score)
        if m:
            s = float(m.group(1))
    return verdict, s, r


def verdict_from_header(status: str | None, score: str | None, required: float = 5.0) -> SpamVerdict | None:
    """The verdict a header written by this server records (the forms
    ``spam_levels`` reads), for a message whose header is trusted (an
    operator testing a stored copy: ``mailyard sieve test``); None: none."""
    verdict, s, r = _parse_verdict(status, score, required)
    if s is None:
        if verdict is None:
            return None
        s = 2 * r if verdict else 0.0
    return SpamVerdict(s, r, verdict)


def _levels(verdict: bool | None, s: float | None, r: float) -> tuple[int, int]:
    if s is None:
        if verdict is None:
            return 0, 0
        s = 2 * r if verdict else 0.0
    ratio = s / r if r > 0 else (2.0 if s > 0 else 0.0)
    level = max(1, min(10, 1 + int(5 * ratio // 1))) if ratio > 0 else 1
    if verdict is True:
        level = max(level, 6)
    elif verdict is False:
        level = min(level, 5)
    percent = max(0, min(100, round(50 * ratio)))
    return level, percent


def _address_part(addr: Mailbox | str, part: str, separator: str) -> str | None:
    if isinstance(addr, Mailbox):
        local, domain = addr.local_part, addr.domain or ""
        full = addr.addr_spec
    else:
        full = addr
        local, _, domain = addr.rpartition("@") if "@" in addr else (addr, "", "")
    if part == "all":
        return full
    if part == "localpart":
        return local
    if part == "domain":
        return domain
    # RFC 5233 4: :user before the first separator, :detail after it; no
    # separator in the local part: :detail names nothing (the test fails)
    if separator and separator in local:
        user, _, detail = local.partition(separator)
    else:
        user, detail = local, None
    return user if part == "user" else detail


# ---------------------------------------------------------------------------
# the run


class _Stop(Exception):
    pass


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*|[0-9]+)\}")


class _Context:
    def __init__(self, script: Script, message: SieveMessage, envelope: Envelope, limits: Limits,
                 mailbox_exists: Callable[[str], bool] | None) -> None:
        self.script = script
        self.msg = _MessageView(message)
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
            matcher = node.prepared = _Matcher(node, ctx.variables_on)
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
        matcher = node.prepared = _Matcher(node, ctx.variables_on)
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
                value = _address_part(addr, part, sep) if addr else ""
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


def _indexed(ctx: _Context, node: Node, matcher: _Matcher) -> bool:
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
            value = _address_part(box, matcher.part, ctx.limits.separator)
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


def _date_test(ctx: _Context, node: Node, matcher: _Matcher, field: str | None) -> bool:
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
