"""Log lines: one line per event, ``key=value`` fields in a fixed order, or
one JSON object per line with the same fields (``[server] log_format``).

Code logs an event with `event`::

    logs.event(log, logging.WARNING, "login_failed", proto="imap", ip=ip, user=name, reason="wrong-credentials")

which renders (text format)::

    ts=2026-12-05T02:09:49.123Z level=warning logger=mailyard.auth event=login_failed proto=imap ip=192.0.2.7 user=alice@example.test reason=wrong-credentials

Every line starts ``ts level logger event``; the event's fields follow in
the order of `FIELD_ORDER` (then any others in the order given), whatever
order the call named them in, so one regular expression (contrib/fail2ban/)
or one parser reads every line. ``ip`` comes before any client-chosen value
(``user``, addresses), so a name such as ``x ip=1.2.3.4`` cannot pose as the
address: values with spaces, quotes, ``=`` or control characters are quoted
and escaped, and a line never holds a raw line break.

A record not logged through `event` (a plain ``log.info("...")``) becomes
``event=log msg="..."``; an exception's traceback becomes ``exc="..."`` on
the same line (a long one keeps its end: the exception's type and message).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

__all__ = ["FIELD_ORDER", "Event", "KeyValueFormatter", "JSONFormatter", "event", "render_value", "setup"]

# The order of the fields after ``ts level logger event``. Client-chosen
# values (user, from, to, helo) come after ``ip``.
FIELD_ORDER = (
    "proto", "ip", "port", "tls", "user", "msgid", "queue_id", "from", "to", "relay",
    "status", "size", "delivered", "queued", "delay", "reason", "msg",
)
_RANK = {name: i for i, name in enumerate(FIELD_ORDER)}

# A value left bare: printable ASCII but space, '"', '=' and '\\'.
_BARE = re.compile(r'[!#-<>-\[\]-~]+')

# A value longer than this is cut (client-chosen strings end up here): its
# end goes, but a traceback keeps its end and loses its start.
MAX_VALUE = 512


class Event:
    """The message of an event record: its name and fields. ``str()`` gives
    ``name key=value ...`` so handlers with a plain format (pytest's caplog)
    still show the fields."""

    __slots__ = ("name", "fields")

    def __init__(self, name: str, fields: Mapping[str, Any]) -> None:
        self.name = name
        self.fields = fields

    def ordered(self) -> list[tuple[str, Any]]:
        """The fields in the fixed order (known names first, then as given)."""
        items = [(k, v) for k, v in self.fields.items() if v is not None]
        return sorted(items, key=lambda kv: _RANK.get(kv[0], len(_RANK)))

    def __str__(self) -> str:
        return " ".join([self.name] + [f"{k}={render_value(v)}" for k, v in self.ordered()])


def event(logger: logging.Logger, level: int, name: str, /, **fields: Any) -> None:
    """Log the event ``name`` with ``fields`` (None values are left out)."""
    if logger.isEnabledFor(level):
        logger.log(level, Event(name, fields))


class EventBudget:
    """At most ``burst`` lines of one kind of event in ``window`` seconds.

    For events a client causes at will (a connection refused over a cap):
    without a bound, whoever opens connections as fast as it can also
    writes the log that fast. What is held back is counted, and the next
    line let through says how many (``suppressed=N``), as the kernel's
    printk rate limit does: a count of every line of that kind held back,
    whatever its fields. ``key`` says what is one kind (a listener and a
    reason, not a client address: a spread of addresses must not buy lines
    either). Callers count every event in a metric besides."""

    MAX_KINDS = 1024  # kinds tracked at once; past that all start again, their held-back counts lost

    def __init__(self, burst: int = 20, window: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.window = window
        self._clock = clock
        # kind -> [start of its window, lines let through in it, held back since its last line]
        self._kinds: dict[Hashable, list[float]] = {}

    def event(self, logger: logging.Logger, level: int, name: str, key: Hashable, /, **fields: Any) -> bool:
        """Log like ``event`` unless this kind's budget is spent; whether it was logged."""
        if not logger.isEnabledFor(level):
            return False
        now = self._clock()
        state = self._kinds.get(key)
        if state is None or now - state[0] >= self.window:
            if state is None and len(self._kinds) >= self.MAX_KINDS:
                self._kinds.clear()
            state = self._kinds[key] = [now, 0, state[2] if state is not None else 0]
        if state[1] >= self.burst:
            state[2] += 1
            return False
        state[1] += 1
        held, state[2] = int(state[2]), 0
        event(logger, level, name, **fields, suppressed=held or None)
        return True


def _clean(value: Any) -> str:
    if type(value) is str:
        return value if len(value) <= MAX_VALUE else value[:MAX_VALUE] + "..."
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:.3f}".rstrip("0").rstrip(".")
    elif isinstance(value, (list, tuple, set, frozenset)):
        text = ",".join(str(v) for v in value)
    else:
        text = str(value)
    if len(text) > MAX_VALUE:
        text = text[:MAX_VALUE] + "..."
    return text


def render_value(value: Any) -> str:
    """A value as it appears after ``key=``: bare when it is one plain
    token, else a JSON string (quoted, with ``\\"``, ``\\n`` and ``\\uXXXX``
    escapes), so a value can neither end the line nor fake a field."""
    text = _clean(value)
    if _BARE.fullmatch(text):
        return text
    return json.dumps(text)


def _timestamp(record: logging.LogRecord) -> str:
    # ISO 8601 in UTC with milliseconds (fail2ban and log shippers read it as is).
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord, formatter: logging.Formatter) -> list[tuple[str, Any]]:
    msg = record.msg
    head: list[tuple[str, Any]] = [
        ("ts", _timestamp(record)), ("level", record.levelname.lower()), ("logger", record.name),
    ]
    if isinstance(msg, Event):
        head.append(("event", msg.name))
        head.extend(msg.ordered())
    else:
        head.append(("event", "log"))
        head.append(("msg", record.getMessage()))
    if record.exc_info:
        if not record.exc_text:
            record.exc_text = formatter.formatException(record.exc_info)
    if record.exc_text:
        kind = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else None
        head.append(("exc", _traceback_end(record.exc_text, kind)))
    return head


def _traceback_end(text: str, kind: str | None = None) -> str:
    """A traceback of more than ``MAX_VALUE`` characters cut from its start:
    its end says what happened (the last line is the exception's type and
    message, the frames before it where it was raised), its first lines only
    where the call began. A last line longer than that keeps its own start
    (the exception's type). When what is kept does not name the exception's
    type ``kind`` (a message of several lines, a long note), it is put first."""
    if len(text) <= MAX_VALUE:
        return text
    last = text.rstrip("\n").rpartition("\n")[2]
    if len(last) > MAX_VALUE - 3:
        kept = last[:MAX_VALUE - 3] + "..."
    else:
        kept = "..." + text[-(MAX_VALUE - 3):]
    if kind and kind not in kept:
        kept = f"{kind}: ..." + kept[len(kind) + 5:]
    return kept


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=... logger=... event=... key=value ...`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={render_value(v)}" for k, v in _fields(record, self))


class JSONFormatter(logging.Formatter):
    """One JSON object per line, with the same keys in the same order."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {k: v if isinstance(v, (int, float)) and not isinstance(v, bool) else _clean(v)
             for k, v in _fields(record, self)},
            ensure_ascii=False,
        )


def setup(level: str = "info", log_format: str = "text") -> None:
    """Log to stderr in ``log_format`` ("text": key=value, or "json") at
    ``level``, replacing the root logger's handlers."""
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter() if log_format == "json" else KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # python-multipart warns once per malformed form body, and a form
    # without a session may be posted by anyone (web/bodies.py text_form):
    # the webmail answers such a body 400 itself, so only its errors here
    logging.getLogger("python_multipart").setLevel(max(logging.ERROR, root.level))
