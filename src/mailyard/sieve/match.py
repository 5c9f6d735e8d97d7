"""Comparators and match types (RFC 5228 2.7; RFC 4790 comparators, RFC
5231 relational :count and :value, RFC 5229 match variables, RFC 5260
:regex): ``Matcher`` is a test's keys prepared once, compared with the
values a run gives it. Bounded: the wildcard matcher and ``:regex`` look at
the run's deadline as they go.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import regex

from .actions import Limits
from .errors import SieveRuntimeError
from .parser import Node, compile_regex


class MessageValues(Protocol):
    """The message as a fast test reads it: folded values by key, cached."""

    folded_cache: dict[tuple, list[str]]

    def folded(self, key: tuple, limits: Limits) -> list[str]: ...


class MatchContext(Protocol):
    """What a match needs of the run it is part of: the message, the
    limits and the clock it counts against, the variables it expands
    (RFC 5229 3) and the match variables it sets (RFC 5229 3.2)."""

    msg: MessageValues
    limits: Limits
    steps: int
    deadline: float
    variables_on: bool
    match_vars: list[str]

    def expand(self, text: str) -> str: ...

    def step(self) -> None: ...

    def budget(self) -> float: ...


# ---------------------------------------------------------------------------
# comparators and match types (RFC 5228 2.7, RFC 4790, RFC 5231)

_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(comparator: str, s: str) -> str:
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
        return star_match(_pieces(toks), value)
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


def star_match(pieces: list[str], value: str) -> bool:
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


class Matcher:
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
        self.folded = [fold(self.comparator, k) for k in keys] if self.static else []
        self.globs = [_prepare_glob(k) for k in self.folded] if self.static and self.kind == "matches" else []
        self.regexes = ([compile_regex(k, self.comparator) for k in self.keys]
                        if self.static and self.kind == "regex" else [])
        self.fast = _fast_test(node, self, variables_on)

    def test(self, ctx: MatchContext, values: Iterable[str]) -> bool:
        if self.static:
            keys, folded, globs = self.keys, self.folded, self.globs
        else:
            keys = [ctx.expand(k) for k in self.keys]
            folded = [fold(self.comparator, k) for k in keys]
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
                fv = fold(self.comparator, value[:limit])
                if self.kind == "is":
                    if fv in folded:
                        return True
                elif any(k in fv for k in folded):
                    return True
            return False
        for value in values:
            value = value[:limit]
            fv = fold(self.comparator, value) if self.kind != "value" else value
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
                elif (star_match(globs[i], fv) if isinstance(globs[i], _Pieces)
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

    def test_regex(self, ctx: MatchContext, values: Iterable[str], keys: list[str]) -> bool:
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
        return _relate(rel, fold(self.comparator, value), fold(self.comparator, key))


def _fast_test(node: Node, m: Matcher, variables_on: bool) -> Callable[[MatchContext], bool] | None:
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

    def values(ctx: MatchContext) -> list[str]:
        vals = ctx.msg.folded_cache.get(key)
        if vals is None:
            vals = ctx.msg.folded(key, ctx.limits)
        # the test's own step and one per value and key, as the general path counts them
        ctx.steps += len(vals) * n_keys + 1
        ctx.step()
        return vals

    if m.kind == "is":
        keys = frozenset(m.folded)

        def test_is(ctx: MatchContext) -> bool:
            vals = values(ctx)
            return not keys.isdisjoint(vals)
        return test_is
    if m.kind == "contains":
        ckeys = tuple(m.folded)

        def test_contains(ctx: MatchContext) -> bool:
            vals = values(ctx)
            return any(k in v for v in vals for k in ckeys)
        return test_contains
    globs = tuple(m.globs)

    def test_matches(ctx: MatchContext) -> bool:
        vals = values(ctx)
        return any(star_match(g, v) for v in vals for g in globs)
    return test_matches
