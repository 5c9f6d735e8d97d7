"""Small message bodies kept in the SQLite store's index (store/sqlite/bodies.py
``INLINE_MAX``), through a real server: mail in over SMTP, out over IMAP
FETCH, byte for byte, and the segment files grow only for bodies above the
threshold."""

from __future__ import annotations

import imaplib
import smtplib
from pathlib import Path

from mailyard.store.sqlite.bodies import INLINE_MAX
from tests.conftest import USERS, RunningServer

ALICE = "alice@example.test"


def _message(n: int, size: int) -> bytes:
    """A message of ``size`` bytes (header included; one less if its last line
    would end in a bare CR), its lines 78 octets or fewer."""
    head = (f"From: carol@remote.test\r\nTo: {ALICE}\r\nSubject: number {n}\r\n"
            f"Message-ID: <{n}@remote.test>\r\n\r\n").encode()
    line = b"%04d " % n + b"x" * 70 + b"\r\n"
    body = line * ((size - len(head)) // len(line) + 1)
    cut = body[: size - len(head) - 3]
    return head + (cut[:-1] if cut.endswith(b"\r") else cut) + b"x\r\n"


def _segment_bytes(server: RunningServer) -> int:
    return sum(p.stat().st_size for p in (Path(server.data_dir) / "blobs").glob("*.seg"))


def _fetch_all(server: RunningServer) -> list[bytes]:
    c = imaplib.IMAP4(server.host, server.port("imap"), timeout=10)
    try:
        c.login(ALICE, USERS[ALICE])
        c.select("INBOX", readonly=True)
        typ, data = c.fetch("1:*", "(BODY.PEEK[])")
        assert typ == "OK"
        return [item[1] for item in data if isinstance(item, tuple)]
    finally:
        c.logout()


def test_small_messages_leave_the_segment_files_alone_and_fetch_exactly(mailserver: RunningServer) -> None:
    # (the server adds a Received field of about 200 bytes to the body it stores)
    small = [_message(i, size) for i, size in enumerate((300, 1024, 2000, INLINE_MAX - 1000))]
    before = _segment_bytes(mailserver)
    with smtplib.SMTP(mailserver.host, mailserver.port("smtp"), timeout=10) as s:
        for raw in small:
            assert s.sendmail("carol@remote.test", [ALICE], raw) == {}
    assert _segment_bytes(mailserver) == before  # not a byte appended to a segment
    fetched = _fetch_all(mailserver)
    assert len(fetched) == len(small)
    for raw, got in zip(small, fetched, strict=True):
        # the server's trace fields, then the message as sent
        assert got.startswith(b"Return-Path: <carol@remote.test>\r\n") and got.endswith(raw)
    assert fetched == mailserver.messages(ALICE)


def test_a_message_above_the_threshold_goes_to_a_segment_and_fetches_exactly(mailserver: RunningServer) -> None:
    big = _message(1, INLINE_MAX + 1)
    small = _message(2, 2000)
    before = _segment_bytes(mailserver)
    with smtplib.SMTP(mailserver.host, mailserver.port("smtp"), timeout=10) as s:
        assert s.sendmail("carol@remote.test", [ALICE], big) == {}
        assert s.sendmail("carol@remote.test", [ALICE], small) == {}
    grown = _segment_bytes(mailserver) - before
    fetched = _fetch_all(mailserver)
    assert [got.endswith(raw) for got, raw in zip(fetched, (big, small), strict=True)] == [True, True]
    # the big body (its Received field and the message) is the only one appended
    received = fetched[0].index(b"Received:")
    assert grown == len(fetched[0]) - received
