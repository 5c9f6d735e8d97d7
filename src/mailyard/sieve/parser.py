"""The Sieve parser and checker (RFC 5228 8.2 grammar, 3-5 semantics).

``compile_script`` parses the tokens into commands and tests, then checks
every one against its specification (``COMMANDS`` / ``TESTS``): known name,
``require``d extension (RFC 5228 3.2: using an extension not required is an
error), allowed tags and their arguments, one tag per group (match type,
address part, comparator...), positional arguments of the right kind,
``elsif``/``else`` after ``if``. The result (``Script``) is what the
interpreter runs: a checked tree whose strings have their
``encoded-character`` escapes decoded (RFC 5228 2.4.2.4) already, so a
script that compiled does not fail on its shape at delivery.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import regex

from .errors import SieveError
from .lexer import EOF, IDENT, NUMBER, PUNCT, STRING, TAG, Token, tokenize

# Extensions this interpreter implements, in the order of the SIEVE
# capability (RFC 5804 1.7).
EXTENSIONS: tuple[str, ...] = (
    "fileinto",
    "mailbox",
    "envelope",
    "encoded-character",
    "imap4flags",
    "vacation",
    "vacation-seconds",
    "copy",
    "variables",
    "relational",
    "subaddress",
    "body",
    "reject",
    "ereject",
    "comparator-i;ascii-numeric",
    "date",
    "index",
    "regex",
    "include",
    "duplicate",
    "editheader",
    "enotify",
    "spamtest",
    "spamtestplus",
)

# RFC 5293 6 (Security Considerations): trace fields a script must not add
# or remove, so a filter cannot hide where a message came from or make an
# automatic message look human (the loop protection of RFC 3834 rests on it).
PROTECTED_FIELDS = frozenset({"received", "auto-submitted"})
FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 2.2: printable US-ASCII but ":"
IMPORTANCE = {"1", "2", "3"}  # RFC 5435 3.6

DATE_PARTS = {"year", "month", "day", "date", "julian", "hour", "minute", "second", "time", "iso8601", "std11",
              "zone", "weekday"}
COMPARATORS = {"i;octet", "i;ascii-casemap", "i;ascii-numeric"}
RELATIONS = {"gt", "ge", "lt", "le", "eq", "ne"}

MAX_SCRIPT_CHARS = 1 << 20  # 1 MiB of text
MAX_NESTING = 32  # blocks and test lists inside each other


@dataclass(frozen=True)
class TagSpec:
    arg: str | None = None  # None, "string", "strings" or "number"
    ext: str | None = None  # the extension that must be required to use it
    group: str | None = None  # at most one tag per group


@dataclass(frozen=True)
class Spec:
    ext: str | None = None
    tags: dict[str, TagSpec] = field(default_factory=dict)
    pos: tuple[str, ...] = ()  # kinds of the positional arguments
    pos_min: int | None = None  # fewer allowed: the leading ones are left out
    tests: str = "none"  # "none", "one" or "list"
    block: bool = False


COMPARATOR = {":comparator": TagSpec("string", None, "comparator")}
MATCH = {
    ":is": TagSpec(None, None, "match"),
    ":contains": TagSpec(None, None, "match"),
    ":matches": TagSpec(None, None, "match"),
    ":count": TagSpec("string", "relational", "match"),
    ":value": TagSpec("string", "relational", "match"),
    ":regex": TagSpec(None, "regex", "match"),
}
ADDRESS_PART = {
    ":all": TagSpec(None, None, "part"),
    ":localpart": TagSpec(None, None, "part"),
    ":domain": TagSpec(None, None, "part"),
    ":user": TagSpec(None, "subaddress", "part"),
    ":detail": TagSpec(None, "subaddress", "part"),
}
FLAGS = {":flags": TagSpec("strings", "imap4flags")}
INDEX = {":index": TagSpec("number", "index"), ":last": TagSpec(None, "index")}
ZONE = {":zone": TagSpec("string", None, "zone")}
COPY = {":copy": TagSpec(None, "copy")}
# RFC 5293 5: deleteheader's own :index / :last (no "index" require needed)
EDIT_INDEX = {":index": TagSpec("number"), ":last": TagSpec(None)}

COMMANDS: dict[str, Spec] = {
    "require": Spec(pos=("strings",)),
    "if": Spec(tests="one", block=True),
    "elsif": Spec(tests="one", block=True),
    "else": Spec(block=True),
    "stop": Spec(),
    "keep": Spec(tags=FLAGS),
    "discard": Spec(),
    "fileinto": Spec(ext="fileinto", pos=("string",),
                     tags={**FLAGS, **COPY, ":create": TagSpec(None, "mailbox")}),
    "redirect": Spec(pos=("string",), tags=COPY),
    "reject": Spec(ext="reject", pos=("string",)),
    "ereject": Spec(ext="ereject", pos=("string",)),
    "vacation": Spec(ext="vacation", pos=("string",), tags={
        ":days": TagSpec("number", None, "period"),
        ":seconds": TagSpec("number", "vacation-seconds", "period"),
        ":subject": TagSpec("string"),
        ":from": TagSpec("string"),
        ":addresses": TagSpec("strings"),
        ":mime": TagSpec(None),
        ":handle": TagSpec("string"),
    }),
    "setflag": Spec(ext="imap4flags", pos=("string", "strings"), pos_min=1),
    "addflag": Spec(ext="imap4flags", pos=("string", "strings"), pos_min=1),
    "removeflag": Spec(ext="imap4flags", pos=("string", "strings"), pos_min=1),
    "include": Spec(ext="include", pos=("string",), tags={
        ":personal": TagSpec(None, None, "location"),
        ":global": TagSpec(None, None, "location"),
        ":once": TagSpec(None),
        ":optional": TagSpec(None),
    }),
    "return": Spec(ext="include"),
    "global": Spec(ext="include", pos=("strings",)),
    "set": Spec(ext="variables", pos=("string", "string"), tags={
        ":lower": TagSpec(None, None, "case"),
        ":upper": TagSpec(None, None, "case"),
        ":lowerfirst": TagSpec(None, None, "casefirst"),
        ":upperfirst": TagSpec(None, None, "casefirst"),
        ":quotewildcard": TagSpec(None),
        ":quoteregex": TagSpec(None, "regex"),
        ":length": TagSpec(None),
        ":encodeurl": TagSpec(None, "enotify"),  # RFC 5435 4.1
    }),
    "addheader": Spec(ext="editheader", pos=("string", "string"), tags={":last": TagSpec(None)}),
    "deleteheader": Spec(ext="editheader", pos=("string", "strings"), pos_min=1,
                         tags={**COMPARATOR, **MATCH, **EDIT_INDEX}),
    "notify": Spec(ext="enotify", pos=("string",), tags={
        ":from": TagSpec("string"),
        ":importance": TagSpec("string"),
        ":options": TagSpec("strings"),
        ":message": TagSpec("string"),
    }),
}

TESTS: dict[str, Spec] = {
    "address": Spec(tags={**COMPARATOR, **MATCH, **ADDRESS_PART, **INDEX}, pos=("strings", "strings")),
    "envelope": Spec(ext="envelope", tags={**COMPARATOR, **MATCH, **ADDRESS_PART}, pos=("strings", "strings")),
    "header": Spec(tags={**COMPARATOR, **MATCH, **INDEX}, pos=("strings", "strings")),
    "date": Spec(ext="date", tags={**COMPARATOR, **MATCH, **INDEX, **ZONE,
                                   ":originalzone": TagSpec(None, None, "zone")},
                 pos=("string", "string", "strings")),
    "currentdate": Spec(ext="date", tags={**COMPARATOR, **MATCH, **ZONE}, pos=("string", "strings")),
    "exists": Spec(pos=("strings",)),
    "size": Spec(tags={":over": TagSpec("number", None, "size"), ":under": TagSpec("number", None, "size")}),
    "allof": Spec(tests="list"),
    "anyof": Spec(tests="list"),
    "not": Spec(tests="one"),
    "true": Spec(),
    "false": Spec(),
    "hasflag": Spec(ext="imap4flags", tags={**COMPARATOR, **MATCH}, pos=("strings", "strings"), pos_min=1),
    "string": Spec(ext="variables", tags={**COMPARATOR, **MATCH}, pos=("strings", "strings")),
    "body": Spec(ext="body", tags={
        **COMPARATOR, **MATCH,
        ":raw": TagSpec(None, None, "transform"),
        ":content": TagSpec("strings", None, "transform"),
        ":text": TagSpec(None, None, "transform"),
    }, pos=("strings",)),
    "mailboxexists": Spec(ext="mailbox", pos=("strings",)),
    "duplicate": Spec(ext="duplicate", tags={
        ":handle": TagSpec("string"),
        ":header": TagSpec("string", None, "id"),
        ":uniqueid": TagSpec("string", None, "id"),
        ":seconds": TagSpec("number"),
        ":last": TagSpec(None),
    }),
    "valid_notify_method": Spec(ext="enotify", pos=("strings",)),
    "notify_method_capability": Spec(ext="enotify", tags={**COMPARATOR, **MATCH},
                                     pos=("string", "string", "strings")),
    "spamtest": Spec(ext="spamtest", tags={**COMPARATOR, **MATCH, ":percent": TagSpec(None, "spamtestplus")},
                     pos=("strings",)),
}


@dataclass
class Node:
    """A checked command or test: ``tags`` maps each tag given to its
    argument (True when it takes none), ``pos`` holds the positional
    arguments (a str, a list of str, an int, or None for a left-out leading
    one), ``branches`` the (test, block) pairs of an if/elsif/else chain."""

    name: str
    line: int
    column: int
    tags: dict[str, Any] = field(default_factory=dict)
    pos: list[Any] = field(default_factory=list)
    tests: list[Node] = field(default_factory=list)
    block: list[Node] | None = None
    branches: list[tuple[Node | None, list[Node]]] = field(default_factory=list)
    # What the interpreter prepares once per test (its matcher), kept here
    # so that each delivery does not redo it.
    prepared: Any = field(default=None, repr=False, compare=False)


@dataclass
class Script:
    """A compiled script: its commands and the extensions it required."""

    commands: list[Node]
    require: frozenset[str]
    size: int  # characters of source
    rules: int  # commands and tests in it (for figures and limits)
    names: frozenset[str] = frozenset()  # the commands and tests it uses


@dataclass
class _Raw:
    name: str
    tok: Token
    args: list[tuple[str, Any, Token]]  # ("tag"|"number"|"string"|"strings", value, token)
    tests: list[_Raw]
    block: list[_Raw] | None


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0
        self.count = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def fail(self, tok: Token, what: str) -> SieveError:
        got = f"{tok.kind} {tok.value!r}" if tok.kind != EOF else "the end of the script"
        return SieveError(f"expected {what}, found {got}", tok.line, tok.column)

    def commands(self, depth: int, closing: bool) -> list[_Raw]:
        out: list[_Raw] = []
        while True:
            tok = self.peek()
            if tok.kind == EOF:
                if closing:
                    raise self.fail(tok, "'}'")
                return out
            if tok.kind == PUNCT and tok.value == "}" and closing:
                self.take()
                return out
            out.append(self.command(depth))

    def command(self, depth: int) -> _Raw:
        tok = self.take()
        if tok.kind != IDENT:
            raise self.fail(tok, "a command")
        self.count += 1
        args, tests = self.arguments(depth)
        end = self.take()
        if end.kind == PUNCT and end.value == ";":
            return _Raw(str(tok.value), tok, args, tests, None)
        if end.kind == PUNCT and end.value == "{":
            if depth >= MAX_NESTING:
                raise SieveError("blocks nested too deeply", end.line, end.column)
            return _Raw(str(tok.value), tok, args, tests, self.commands(depth + 1, True))
        raise self.fail(end, "';' or '{'")

    def arguments(self, depth: int) -> tuple[list[tuple[str, Any, Token]], list[_Raw]]:
        args: list[tuple[str, Any, Token]] = []
        while True:
            tok = self.peek()
            if tok.kind == TAG:
                args.append(("tag", self.take().value, tok))
            elif tok.kind == NUMBER:
                args.append(("number", self.take().value, tok))
            elif tok.kind == STRING:
                args.append(("string", self.take().value, tok))
            elif tok.kind == PUNCT and tok.value == "[":
                self.take()
                items: list[str] = []
                while True:
                    s = self.take()
                    if s.kind != STRING:
                        raise self.fail(s, "a string in the list")
                    items.append(str(s.value))
                    sep = self.take()
                    if sep.kind == PUNCT and sep.value == "]":
                        break
                    if not (sep.kind == PUNCT and sep.value == ","):
                        raise self.fail(sep, "',' or ']'")
                args.append(("strings", items, tok))
            else:
                break
        tests: list[_Raw] = []
        tok = self.peek()
        if tok.kind == IDENT:
            tests.append(self.test(depth + 1))
        elif tok.kind == PUNCT and tok.value == "(":
            self.take()
            while True:
                tests.append(self.test(depth + 1))
                sep = self.take()
                if sep.kind == PUNCT and sep.value == ")":
                    break
                if not (sep.kind == PUNCT and sep.value == ","):
                    raise self.fail(sep, "',' or ')'")
            tests = [_Raw("(", tok, [], tests, None)]  # marks an explicit test list
        return args, tests

    def test(self, depth: int) -> _Raw:
        if depth >= MAX_NESTING:
            tok = self.peek()
            raise SieveError("tests nested too deeply", tok.line, tok.column)
        tok = self.take()
        if tok.kind != IDENT:
            raise self.fail(tok, "a test")
        self.count += 1
        args, tests = self.arguments(depth)
        return _Raw(str(tok.value), tok, args, tests, None)


MAX_REGEX_CHARS = 1024


def compile_regex(pattern: str, comparator: str) -> regex.Pattern[str]:
    """A ``:regex`` key (draft-ietf-sieve-regex: POSIX extended expressions;
    Python's syntax is a superset of what scripts use): i;ascii-casemap
    folds ASCII letters only. Raises regex.error."""
    if len(pattern) > MAX_REGEX_CHARS:
        raise regex.error(f"longer than {MAX_REGEX_CHARS} characters")
    flags = regex.IGNORECASE | regex.ASCII if comparator == "i;ascii-casemap" else 0
    return regex.compile(pattern, flags | regex.DOTALL | regex.VERSION0)


_ENCODED = re.compile(r"\$\{(hex|unicode):([^}]*)\}", re.IGNORECASE)


def _decode_encoded(text: str) -> str:
    """RFC 5228 2.4.2.4: ``${hex:...}`` and ``${unicode:...}`` decoded; a
    malformed one is left as written."""

    def sub(m: re.Match[str]) -> str:
        kind, body = m.group(1).lower(), m.group(2).strip(" \t\r\n")
        parts = body.split()
        try:
            if kind == "hex":
                if not all(len(p) <= 2 * 1024 and re.fullmatch(r"[0-9A-Fa-f]+", p) and len(p) % 2 == 0
                           for p in parts):
                    return m.group()
                return bytes.fromhex("".join(parts)).decode("utf-8")
            cps = [int(p, 16) for p in parts if re.fullmatch(r"[0-9A-Fa-f]{1,8}", p)]
            if len(cps) != len(parts) or any(0xD800 <= c <= 0xDFFF or c > 0x10FFFF for c in cps):
                return m.group()
            return "".join(chr(c) for c in cps)
        except (ValueError, UnicodeDecodeError):
            return m.group()

    return _ENCODED.sub(sub, text)


class _Checker:
    def __init__(self) -> None:
        self.require: set[str] = set()
        self.names: set[str] = set()

    def need(self, ext: str | None, tok: Token, what: str) -> None:
        if ext is not None and ext not in self.require:
            raise SieveError(f"{what} needs require \"{ext}\"", tok.line, tok.column)

    def string(self, value: str) -> str:
        if "encoded-character" in self.require and "${" in value:
            return _decode_encoded(value)
        return value

    def block(self, raws: list[_Raw], top: bool) -> list[Node]:
        out: list[Node] = []
        seen_other = False
        for raw in raws:
            tok = raw.tok
            if raw.name == "require":
                if not top or seen_other:
                    raise SieveError("require must come before any other command", tok.line, tok.column)
                node = self.node(raw, COMMANDS["require"], "command")
                for ext in node.pos[0]:
                    if ext not in EXTENSIONS:
                        raise SieveError(f"unsupported extension \"{ext}\"", tok.line, tok.column)
                    self.require.add(ext)
                    if ext == "spamtestplus":
                        self.require.add("spamtest")  # RFC 5235 3.2: it implies "spamtest"
                continue
            seen_other = True
            spec = COMMANDS.get(raw.name)
            if spec is None:
                if raw.name in TESTS:
                    raise SieveError(f"'{raw.name}' is a test, not a command", tok.line, tok.column)
                raise SieveError(f"unknown command '{raw.name}'", tok.line, tok.column)
            node = self.node(raw, spec, "command")
            if raw.name in ("elsif", "else"):
                if not out or out[-1].name != "if" or out[-1].branches[-1][0] is None:
                    raise SieveError(f"'{raw.name}' without a preceding 'if'", tok.line, tok.column)
                assert node.block is not None
                out[-1].branches.append((node.tests[0] if node.tests else None, node.block))
                continue
            if raw.name == "if":
                assert node.block is not None
                node.branches = [(node.tests[0], node.block)]
            out.append(node)
        return out

    def node(self, raw: _Raw, spec: Spec, kind: str) -> Node:
        tok = raw.tok
        self.need(spec.ext, tok, f"{kind} '{raw.name}'")
        self.names.add(raw.name)
        node = Node(raw.name, tok.line, tok.column)
        groups: dict[str, str] = {}
        args = raw.args
        i = 0
        positional: list[tuple[str, Any, Token]] = []
        while i < len(args):
            akind, value, atok = args[i]
            i += 1
            if akind != "tag":
                positional.append((akind, value, atok))
                continue
            if positional:
                raise SieveError(f"tag {value} after the positional arguments", atok.line, atok.column)
            tspec = spec.tags.get(value)
            if tspec is None:
                raise SieveError(f"{kind} '{raw.name}' takes no tag {value}", atok.line, atok.column)
            self.need(tspec.ext, atok, f"tag {value}")
            if value in node.tags:
                raise SieveError(f"tag {value} given twice", atok.line, atok.column)
            if tspec.group is not None:
                if tspec.group in groups:
                    raise SieveError(f"tags {groups[tspec.group]} and {value} cannot be used together",
                                     atok.line, atok.column)
                groups[tspec.group] = value
            if tspec.arg is None:
                node.tags[value] = True
                continue
            if i >= len(args):
                raise SieveError(f"tag {value} needs an argument", atok.line, atok.column)
            node.tags[value] = self.value(args[i], tspec.arg, f"the argument of {value}")
            i += 1
        want = spec.pos
        least = len(want) if spec.pos_min is None else spec.pos_min
        if not least <= len(positional) <= len(want):
            n = f"{least}" if least == len(want) else f"{least} to {len(want)}"
            raise SieveError(f"{kind} '{raw.name}' takes {n} positional argument(s), got {len(positional)}",
                             tok.line, tok.column)
        missing = len(want) - len(positional)
        node.pos = [None] * missing + [
            self.value(arg, want[missing + k], f"argument {missing + k + 1} of '{raw.name}'")
            for k, arg in enumerate(positional)
        ]
        self.tests(raw, spec, node, kind)
        if spec.block:
            if raw.block is None:
                raise SieveError(f"'{raw.name}' needs a block {{ ... }}", tok.line, tok.column)
            node.block = self.block(raw.block, False)
        elif raw.block is not None:
            raise SieveError(f"'{raw.name}' takes no block", tok.line, tok.column)
        self.semantics(node, tok)
        return node

    def tests(self, raw: _Raw, spec: Spec, node: Node, kind: str) -> None:
        tok = raw.tok
        given = raw.tests
        if spec.tests == "none":
            if given:
                raise SieveError(f"{kind} '{raw.name}' takes no test", tok.line, tok.column)
            return
        if spec.tests == "one":
            if len(given) != 1 or given[0].name == "(":
                raise SieveError(f"{kind} '{raw.name}' needs one test", tok.line, tok.column)
            node.tests = [self.test(given[0])]
            return
        if len(given) != 1 or given[0].name != "(":
            raise SieveError(f"test '{raw.name}' needs a test list ( ... )", tok.line, tok.column)
        node.tests = [self.test(t) for t in given[0].tests]

    def test(self, raw: _Raw) -> Node:
        spec = TESTS.get(raw.name)
        if spec is None:
            if raw.name in COMMANDS:
                raise SieveError(f"'{raw.name}' is a command, not a test", raw.tok.line, raw.tok.column)
            raise SieveError(f"unknown test '{raw.name}'", raw.tok.line, raw.tok.column)
        return self.node(raw, spec, "test")

    def value(self, arg: tuple[str, Any, Token], want: str, what: str) -> Any:
        akind, value, tok = arg
        if want == "number":
            if akind != "number":
                raise SieveError(f"{what} must be a number", tok.line, tok.column)
            return value
        if want == "string":
            if akind != "string":
                raise SieveError(f"{what} must be a string", tok.line, tok.column)
            return self.string(value)
        if akind == "string":
            return [self.string(value)]
        if akind == "strings":
            return [self.string(v) for v in value]
        raise SieveError(f"{what} must be a string list", tok.line, tok.column)

    def semantics(self, node: Node, tok: Token) -> None:
        comparator = node.tags.get(":comparator")
        if comparator is not None:
            if comparator not in COMPARATORS:
                raise SieveError(f"unknown comparator \"{comparator}\"", tok.line, tok.column)
            if comparator == "i;ascii-numeric":
                self.need("comparator-i;ascii-numeric", tok, "comparator i;ascii-numeric")
        for rel in (":count", ":value"):
            if rel in node.tags and str(node.tags[rel]).lower() not in RELATIONS:
                raise SieveError(f"{rel} needs one of {', '.join(sorted(RELATIONS))}", tok.line, tok.column)
        if node.name == "size" and not ({":over", ":under"} & node.tags.keys()):
            raise SieveError("size needs :over or :under", tok.line, tok.column)
        if node.name == "envelope":
            for part in node.pos[0]:
                if part.lower() not in ("from", "to") and "${" not in part:
                    raise SieveError(f"unknown envelope part \"{part}\"", tok.line, tok.column)
        if ":regex" in node.tags and node.pos[-1] is not None:
            for key in node.pos[-1]:
                if "${" in key and "variables" in self.require:
                    continue
                try:
                    compile_regex(key, node.tags.get(":comparator", "i;ascii-casemap"))
                except regex.error as exc:
                    raise SieveError(f"bad regular expression {key!r}: {exc}", tok.line, tok.column) from None
        if ":last" in node.tags and ":index" not in node.tags and node.name not in ("duplicate", "addheader"):
            raise SieveError(":last needs :index", tok.line, tok.column)
        if ":index" in node.tags and node.tags[":index"] < 1:
            raise SieveError(":index counts from 1", tok.line, tok.column)
        if node.name in ("date", "currentdate"):
            part = node.pos[-2]
            if part.lower() not in DATE_PARTS and "${" not in part:
                raise SieveError(f"unknown date part \"{part}\"", tok.line, tok.column)
            zone = node.tags.get(":zone")
            if zone is not None and "${" not in zone and not re.fullmatch(r"[+-][0-9]{4}", zone):
                raise SieveError(f"bad time zone \"{zone}\" (+hhmm or -hhmm)", tok.line, tok.column)
        if node.name == "vacation":
            for tag in (":days", ":seconds"):
                if tag in node.tags and node.tags[tag] < 0:
                    raise SieveError(f"{tag} must not be negative", tok.line, tok.column)
        if node.name == "global" and "variables" not in self.require:
            raise SieveError('global needs require "variables"', tok.line, tok.column)  # RFC 6609 3.4
        if node.name == "include":
            name = node.pos[0]
            if "/" in name or name.startswith(".") or not name:
                raise SieveError(f"bad script name \"{name}\"", tok.line, tok.column)  # RFC 6609 3.2
        if node.name in ("addheader", "deleteheader"):
            if node.name == "deleteheader" and node.pos[0] is None:
                # one positional argument: the field name, no value patterns (RFC 5293 5)
                if len(node.pos[1]) != 1:
                    raise SieveError("deleteheader needs a field name", tok.line, tok.column)
                node.pos = [node.pos[1][0], None]
            field = node.pos[0]
            if "${" not in field or "variables" not in self.require:
                if not FIELD_NAME.fullmatch(field):
                    raise SieveError(f"bad header field name \"{field}\"", tok.line, tok.column)
                if field.lower() in PROTECTED_FIELDS:
                    # RFC 5293 6: these stay as the message arrived
                    raise SieveError(f"{node.name} may not change the {field} field", tok.line, tok.column)
        if node.name == "notify":
            imp = node.tags.get(":importance")
            if imp is not None and "${" not in imp and imp not in IMPORTANCE:
                raise SieveError(":importance must be \"1\", \"2\" or \"3\"", tok.line, tok.column)
            method = node.pos[0]
            if "${" not in method and not method.lower().startswith("mailto:"):
                raise SieveError(f"unsupported notification method \"{method}\" (mailto only)",
                                 tok.line, tok.column)
        if node.name == "set":
            name = node.pos[0]
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise SieveError(f"bad variable name \"{name}\"", tok.line, tok.column)


def compile_script(text: str) -> Script:
    """Parse and check ``text``; raises SieveError naming line and column."""
    if len(text) > MAX_SCRIPT_CHARS:
        raise SieveError(f"script too large (at most {MAX_SCRIPT_CHARS} characters)")
    parser = _Parser(tokenize(text))
    raws = parser.commands(0, False)
    checker = _Checker()
    commands = checker.block(raws, True)
    return Script(commands, frozenset(checker.require), len(text), parser.count, frozenset(checker.names))
