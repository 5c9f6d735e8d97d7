"""Readable Sieve from simple rules and a vacation setting, and back.

The webmail's Filters and Vacation pages edit a ``Filters`` model (rules
like "if the subject contains X, move to folder Y" and an out-of-office
reply between two dates); ``to_script`` writes it as a Sieve script a
person can read, with the model itself in a comment line at the top so
that ``from_script`` gives it back. A script without that line (written
by hand, or changed in a raw editor) has no model: the pages then offer
only the raw text. No I/O: delivery/sieve.py ``ScriptStore`` stores the
text, the same way ManageSieve and the CLI do.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

MARKER = "# mailyard-filters: "

FIELDS = ("from", "to", "subject", "header", "size", "spam")
OPS = ("contains", "not-contains", "is", "matches", "over", "under", "ge")
ACTIONS = ("fileinto", "read", "flag", "forward", "forward-copy", "discard", "reject")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")
_NUMBER = re.compile(r"[0-9]{1,9}")  # ASCII digits only: str.isdigit is also true of "²"


class RuleError(ValueError):
    """A rule or vacation setting that cannot be written; the text is for the user."""


@dataclass
class Rule:
    field: str = "subject"  # one of FIELDS
    op: str = "contains"  # one of OPS (size: over/under; spam: ge)
    value: str = ""  # the text, the size in KB, or the spam level 1..10
    header: str = ""  # the field name when field == "header"
    action: str = "fileinto"  # one of ACTIONS
    arg: str = ""  # the folder, the address, or the reject reason
    stop: bool = True  # no later rule applies to a message this one matched


@dataclass
class VacationSetting:
    enabled: bool = False
    start: str = ""  # YYYY-MM-DD, "" for no start
    end: str = ""  # YYYY-MM-DD (the last day), "" for no end
    subject: str = ""
    text: str = ""
    days: int = 7


@dataclass
class Filters:
    rules: list[Rule] = field(default_factory=list)
    vacation: VacationSetting = field(default_factory=VacationSetting)


def quote(text: str) -> str:
    """A Sieve quoted string (RFC 5228 2.4.2): backslash and quote escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _one_line(text: str) -> str:
    return " ".join(text.split())


def check_rule(rule: Rule) -> Rule:
    """``rule`` normalised, or RuleError saying what is wrong."""
    if rule.field not in FIELDS:
        raise RuleError(f"unknown field {rule.field!r}")
    if rule.action not in ACTIONS:
        raise RuleError(f"unknown action {rule.action!r}")
    rule.value = _one_line(rule.value)
    rule.arg = _one_line(rule.arg)
    rule.header = rule.header.strip()
    if rule.field == "size":
        if rule.op not in ("over", "under") or not _NUMBER.fullmatch(rule.value):
            raise RuleError("a size rule needs over or under and a number of KB")
    elif rule.field == "spam":
        if not _NUMBER.fullmatch(rule.value) or not 1 <= int(rule.value) <= 10:
            raise RuleError("a spam rule needs a level from 1 to 10")
        rule.op = "ge"
    else:
        if rule.op not in ("contains", "not-contains", "is", "matches"):
            raise RuleError(f"unknown comparison {rule.op!r}")
        if not rule.value:
            raise RuleError("a rule needs a value to compare with")
    if rule.field == "header" and not _HEADER_NAME.fullmatch(rule.header):
        raise RuleError("a header rule needs a field name (such as List-Id)")
    if rule.action == "fileinto" and not rule.arg:
        raise RuleError("choose the folder to move to")
    if rule.action in ("forward", "forward-copy") and ("@" not in rule.arg or " " in rule.arg):
        raise RuleError("forwarding needs an address")
    return rule


def _test(rule: Rule) -> str:
    if rule.field == "size":
        return f"size :{rule.op} {int(rule.value)}K"
    if rule.field == "spam":
        return f'spamtest :value "ge" :comparator "i;ascii-numeric" {quote(rule.value)}'
    match = {"contains": ":contains", "not-contains": ":contains", "is": ":is", "matches": ":matches"}[rule.op]
    if rule.field in ("from", "to"):
        test = f"address {match} {quote(rule.field)} {quote(rule.value)}"
    else:
        name = rule.header if rule.field == "header" else "subject"
        test = f"header {match} {quote(name)} {quote(rule.value)}"
    return "not " + test if rule.op == "not-contains" else test


def _action(rule: Rule) -> str:
    a = rule.action
    if a == "fileinto":
        return f"fileinto :create {quote(rule.arg)};"
    if a == "read":
        return 'addflag "\\\\Seen";'
    if a == "flag":
        return 'addflag "\\\\Flagged";'
    if a == "forward":
        return f"redirect {quote(rule.arg)};"
    if a == "forward-copy":
        return f"redirect :copy {quote(rule.arg)};"
    if a == "discard":
        return "discard;"
    return f"reject {quote(rule.arg or 'This message was refused.')};"


def check_vacation(v: VacationSetting) -> VacationSetting:
    for name, value in (("start", v.start), ("end", v.end)):
        if value and not _DATE.fullmatch(value):
            raise RuleError(f"the {name} date must be YYYY-MM-DD")
    if v.start and v.end and v.end < v.start:
        raise RuleError("the end date is before the start date")
    if not 1 <= v.days <= 90:
        raise RuleError("days must be between 1 and 90")
    v.subject = _one_line(v.subject)
    if v.enabled and not v.text.strip():
        raise RuleError("the reply needs a text")
    return v


def to_script(model: Filters) -> str:
    """The script for ``model`` (each rule checked: RuleError)."""
    rules = [check_rule(r) for r in model.rules]
    vac = check_vacation(model.vacation)
    need: set[str] = set()
    body: list[str] = []
    if vac.enabled:
        need |= {"vacation"}
        dates = []
        if vac.start:
            dates.append(f'currentdate :value "ge" "date" {quote(vac.start)}')
        if vac.end:
            dates.append(f'currentdate :value "le" "date" {quote(vac.end)}')
        if dates:
            need |= {"date", "relational"}
        reply = f"vacation :days {vac.days}" + (f" :subject {quote(vac.subject)}" if vac.subject else "")
        reply += f" {quote(vac.text.replace(chr(13), ''))};"
        body.append("# out-of-office reply (RFC 5230)")
        if dates:
            cond = dates[0] if len(dates) == 1 else f"allof ({', '.join(dates)})"
            body.append(f"if {cond} {{\n    {reply}\n}}")
        else:
            body.append(reply)
    for i, rule in enumerate(rules, 1):
        if rule.action == "fileinto":
            need |= {"fileinto", "mailbox"}
        elif rule.action in ("read", "flag"):
            need.add("imap4flags")
        elif rule.action == "forward-copy":
            need.add("copy")
        elif rule.action == "reject":
            need.add("reject")
        if rule.field == "spam":
            need |= {"spamtest", "relational", "comparator-i;ascii-numeric"}
        lines = [f"    {_action(rule)}"] + (["    stop;"] if rule.stop else [])
        body.append(f"# rule {i}\nif {_test(rule)} {{\n" + "\n".join(lines) + "\n}")
    blob = json.dumps({"rules": [asdict(r) for r in rules], "vacation": asdict(vac)}, separators=(",", ":"),
                      ensure_ascii=True)
    head = [MARKER + blob, "# Written by the webmail's Filters and Vacation pages."]
    if need:
        head.append("require [" + ", ".join(quote(n) for n in sorted(need)) + "];")
    return "\n".join(head + [""] + body) + "\n"


def _typed(cls: type, data: object) -> object:
    """An instance of the dataclass ``cls`` from the JSON object ``data``,
    each known key of the type of its default (bool for bool, int not bool
    for int, str for str); TypeError otherwise."""
    if not isinstance(data, dict):
        raise TypeError("not an object")
    values = {}
    for name, f in cls.__dataclass_fields__.items():
        if name not in data:
            continue
        value, kind = data[name], type(f.default)
        if type(value) is not kind:  # exact: True is not an int here, nor "7"
            raise TypeError(f"{name} is not a {kind.__name__}")
        values[name] = value
    return cls(**values)


def from_script(text: str) -> Filters | None:
    """The model a script written by ``to_script`` holds; None for another
    script, or one whose marker line (which anyone may edit) does not hold
    a model of the right types."""
    first = text.split("\n", 1)[0].rstrip("\r")
    if not first.startswith(MARKER):
        return None
    try:
        data = json.loads(first[len(MARKER):])
        if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
            return None
        rules = [_typed(Rule, r) for r in data["rules"]]
        vac = _typed(VacationSetting, data.get("vacation", {}))
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    return Filters(rules, vac)  # type: ignore[arg-type]
