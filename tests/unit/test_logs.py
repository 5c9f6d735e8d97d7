"""A long traceback in a log line (mailyard/logs.py): the value is cut to
``MAX_VALUE``, and what is kept is its end, where the exception's type and
message are, in both formats."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from mailyard.logs import MAX_VALUE, EventBudget, JSONFormatter, KeyValueFormatter


def _deep(depth: int, exc: Exception) -> None:
    if depth:
        _deep(depth - 1, exc)
    raise exc


@pytest.fixture(params=["text", "json"])
def logged(request: pytest.FixtureRequest) -> Iterator[object]:
    """log(exc) -> the ``exc`` field of the one line logging ``exc`` wrote."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(KeyValueFormatter() if request.param == "text" else JSONFormatter())
    logger = logging.getLogger("mailyard.test-logs")
    logger.addHandler(handler)
    logger.propagate = False

    def log(exc: Exception, depth: int = 20) -> str:
        out.seek(0)
        out.truncate()
        try:
            _deep(depth, exc)
        except Exception:
            logger.exception("Exception in ASGI application")
        (line,) = out.getvalue().splitlines()
        if request.param == "json":
            return json.loads(line)["exc"]
        assert " exc=\"" in line  # the last field, a JSON string
        return json.loads(line.rpartition(" exc=")[2])

    yield log
    logger.removeHandler(handler)
    logger.propagate = True


def test_a_long_traceback_keeps_its_end(logged) -> None:  # noqa: ANN001
    exc = logged(LookupError("the reason it failed"))
    assert exc.endswith("\nLookupError: the reason it failed")
    assert "in _deep" in exc  # the frames nearest the raise
    assert exc.startswith("...")
    assert len(exc) <= MAX_VALUE


def test_a_long_last_line_keeps_the_exception_type(logged) -> None:  # noqa: ANN001
    exc = logged(LookupError("x" * 5000))
    assert exc.startswith("LookupError: xxx")
    assert exc.endswith("x...")
    assert len(exc) <= MAX_VALUE


def test_a_short_traceback_is_whole(logged) -> None:  # noqa: ANN001
    exc = logged(KeyError("k"), depth=0)
    assert len(exc) < MAX_VALUE
    assert exc.startswith("Traceback (most recent call last):")
    assert exc.endswith("KeyError: 'k'")


def test_a_message_of_many_lines_keeps_the_exception_type(logged) -> None:  # noqa: ANN001
    """A message of several lines, or a long note (PEP 678), pushes the
    type's line out of what is kept: the type is put first."""
    exc = logged(LookupError("the first line\n" + "detail " * 100))
    assert exc.startswith("LookupError: ...") and "detail" in exc and len(exc) <= MAX_VALUE
    noted = LookupError("short")
    noted.add_note("note " * 120)
    exc = logged(noted)
    assert exc.startswith("LookupError: ...") and len(exc) <= MAX_VALUE


def test_an_event_budget_bounds_each_kind_and_says_what_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    """EventBudget: ``burst`` lines per kind in a window, the others counted
    and named in the next line let through; kinds do not share a budget."""
    now = [100.0]
    budget = EventBudget(burst=3, window=10.0, clock=lambda: now[0])
    logger = logging.getLogger("mailyard.test-budget")
    caplog.set_level(logging.WARNING, logger="mailyard.test-budget")
    said = [budget.event(logger, logging.WARNING, "refused", ("smtp", "per-ip"), ip=f"192.0.2.{i}")
            for i in range(10)]
    assert said == [True] * 3 + [False] * 7
    assert budget.event(logger, logging.WARNING, "refused", ("imap", "per-ip"), ip="192.0.2.99")
    now[0] += 10.0
    assert budget.event(logger, logging.WARNING, "refused", ("smtp", "per-ip"), ip="192.0.2.50")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5
    assert "suppressed" not in " ".join(lines[:4])
    assert lines[-1] == "refused ip=192.0.2.50 suppressed=7"


def test_setup_keeps_the_multipart_parsers_warnings_about_client_bodies_out() -> None:
    """A malformed form body is the client's, answered 400 by the webmail:
    python-multipart's warning for it is not a line anyone can add at will."""
    from python_multipart.multipart import QuerystringParser

    from mailyard import logs

    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("python_multipart").level)
    try:
        logs.setup("info")
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        QuerystringParser(max_size=3).write(b"a=1&b=2")  # "truncating data length"
        assert "truncating" not in stream.getvalue()
        logging.getLogger("mailyard.web").warning("still here")
        assert "still here" in stream.getvalue()
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        logging.getLogger("python_multipart").setLevel(saved[2])
