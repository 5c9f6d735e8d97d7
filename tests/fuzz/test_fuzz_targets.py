"""The bounded part of the fuzzing that ``make test`` runs.

1. Every input of the committed corpus (tests/fuzz/corpus/<target>/: seeds,
   coverage-adding finds of ``make fuzz``, former crashes) replays through the
   same driver the atheris targets use (harness.py), so a fixed bug stays fixed.
2. A bounded hypothesis search per target generates new inputs from the seed
   lines and random bytes (max_examples and deadline keep it to seconds).

The drivers raise on any exception from the engine, any malformed reply,
output out of proportion to the input, or an event loop that does not end.
"""

from __future__ import annotations

import pathlib
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .harness import HEADER, RUNNERS

CORPUS = pathlib.Path(__file__).parent / "corpus"
TARGETS = sorted(RUNNERS)


def corpus_files(target: str) -> list[pathlib.Path]:
    return sorted(p for p in (CORPUS / target).iterdir() if p.is_file())


@pytest.mark.parametrize("target", TARGETS)
def test_committed_corpus_replays_cleanly(target: str) -> None:
    files = corpus_files(target)
    assert any(p.name.startswith("seed-") for p in files), "the seeds are missing"
    run = RUNNERS[target]
    failures = []
    for path in files:
        try:
            run(path.read_bytes())
        except Exception as exc:  # collect all, report each file by name
            failures.append(f"{path.name}: {type(exc).__name__}: {str(exc)[:300]}")
    assert not failures, "\n".join(failures)


def _fragments(target: str) -> list[bytes]:
    """Lines of the seed files: whole commands / header lines to recombine."""
    out: set[bytes] = set()
    for path in corpus_files(target):
        if path.name.startswith("seed-"):
            data = path.read_bytes()
            if target != "message":
                data = data[HEADER:]
            out.update(line for line in data.splitlines(keepends=True) if line)
    return sorted(out)


def _inputs(target: str) -> st.SearchStrategy[bytes]:
    pieces = st.lists(
        st.one_of(st.sampled_from(_fragments(target)), st.binary(max_size=40)),
        max_size=30,
    ).map(b"".join)
    if target == "message":
        return pieces
    return st.tuples(st.binary(min_size=HEADER, max_size=HEADER), pieces).map(b"".join)


BOUNDED = settings(
    max_examples=300,
    deadline=timedelta(seconds=5),  # the per-input time guard: a hang fails the test
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)


@BOUNDED
@given(_inputs("smtp"))
def test_smtp_engine_fuzz(data: bytes) -> None:
    RUNNERS["smtp"](data)


@BOUNDED
@given(_inputs("pop3"))
def test_pop3_engine_fuzz(data: bytes) -> None:
    RUNNERS["pop3"](data)


@BOUNDED
@given(_inputs("imap"))
def test_imap_engine_fuzz(data: bytes) -> None:
    RUNNERS["imap"](data)


@BOUNDED
@given(_inputs("message"))
def test_message_derivation_fuzz(data: bytes) -> None:
    RUNNERS["message"](data)


def test_harness_catches_a_malformed_reply() -> None:
    """The checks can fail: a broken SMTP/IMAP reply is reported."""
    from .harness import FuzzFailure, imap_check_responses, smtp_check_replies

    assert smtp_check_replies(b"220 ok\r\n250-a\r\n250 b\r\n") == 2
    for bad in (b"220 ok", b"22 short\r\n", b"250-a\r\n354 b\r\n", b"250-a\r\n"):
        with pytest.raises(FuzzFailure):
            smtp_check_replies(bad)
    assert imap_check_responses(b"* 1 FETCH (BODY[] {3}\r\nabc)\r\na1 OK done\r\n+ go\r\n") == 1
    for bad in (b"* 1 FETCH (FLAGS\r\n", b'* LIST () "/" "x\r\n', b"* 1 FETCH (BODY[] {9}\r\nabc)\r\n",
                b"a1 maybe\r\n", b"* OK fine"):
        with pytest.raises(FuzzFailure):
            imap_check_responses(bad)


@pytest.mark.parametrize(
    ("target", "selector", "command", "size"),
    [("smtp", 2, b"HELP\r\n", 4096), ("pop3", 0, b"CAPA\r\n", 60_000)],
)
def test_drivers_write_the_replies_an_engine_flushes(target: str, selector: int, command: bytes, size: int) -> None:
    """Pipelined commands with big answers make the engine say ``FLUSH``
    (protocols/contract.py FLUSH_AT); the driver writes the replies and goes
    on, and every command is answered."""
    data = bytes([selector]) + b"\0" * (HEADER - 1) + command * ((size - HEADER) // len(command))
    out = RUNNERS[target](data)
    assert len(out) > 64 * 1024
