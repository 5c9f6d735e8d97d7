"""message/resend.py: the resent block of a redirection (RFC 5322 3.6.6),
byte for byte."""

from __future__ import annotations

import pytest

from mailyard.message.resend import resend, resent_block

DATE = 1_796_450_400.0  # Sat, 05 Dec 2026 06:00:00 +0000


def test_block_fields_in_order_and_encoded_name() -> None:
    block = resent_block(("Jörg Müller", "joerg@example.test"), ["bob@example.test", "carol@example.org"],
                         date=DATE, message_id="<r1@example.test>")
    assert block == (
        b"Resent-From: =?utf-8?b?SsO2cmcgTcO8bGxlcg==?= <joerg@example.test>\r\n"
        b"Resent-To: bob@example.test, carol@example.org\r\n"
        b"Resent-Date: Sat, 05 Dec 2026 06:00:00 +0000\r\n"
        b"Resent-Message-ID: <r1@example.test>\r\n"
    )


def test_long_recipient_list_is_folded_at_commas() -> None:
    rcpts = [f"recipient-number-{n}@example.test" for n in range(6)]
    block = resent_block((None, "a@example.test"), rcpts, date=DATE, message_id="<r@example.test>")
    to = block.split(b"\r\n")[1:4]
    assert to == [b"Resent-To: recipient-number-0@example.test, recipient-number-1@example.test,",
                  b" recipient-number-2@example.test, recipient-number-3@example.test,",
                  b" recipient-number-4@example.test, recipient-number-5@example.test"]
    assert all(len(line) <= 78 for line in block.split(b"\r\n"))


@pytest.mark.parametrize("bad", [("Eve\r\nBcc: x@y", "a@example.test"), (None, "a@example.test\nX: y")])
def test_line_breaks_are_refused(bad: tuple) -> None:
    with pytest.raises(ValueError):
        resent_block(bad, ["b@example.test"])
    with pytest.raises(ValueError):
        resent_block((None, "a@example.test"), ["b@example.test\r\nX: y"])
    with pytest.raises(ValueError):
        resent_block((None, "a@example.test"), [])


def test_resend_keeps_the_original_bytes_less_its_delivery_fields() -> None:
    raw = (b"Return-Path: <carol@example.org>\r\n"
           b"Delivered-To: alice@example.test\r\n"
           b"Received: from mx by here; Sat, 05 Dec 2026 06:00:00 +0000\r\n"
           b"From: Carol <carol@example.org>\r\n"
           b"Bcc: hidden@example.org,\r\n\tother@example.org\r\n"
           b"Subject: hi\r\n"
           b"\r\n"
           b"body line\r\nBcc: not a header\r\n")
    out = resend(raw, b"Resent-From: a@example.test\r\n")
    assert out == (b"Resent-From: a@example.test\r\n"
                   b"Received: from mx by here; Sat, 05 Dec 2026 06:00:00 +0000\r\n"
                   b"From: Carol <carol@example.org>\r\n"
                   b"Subject: hi\r\n"
                   b"\r\n"
                   b"body line\r\nBcc: not a header\r\n")


def test_bare_lf_becomes_crlf() -> None:
    out = resend(b"From: c@example.org\nSubject: x\n\nline\n", b"Resent-From: a@example.test\r\n")
    assert out == b"Resent-From: a@example.test\r\nFrom: c@example.org\r\nSubject: x\r\n\r\nline\r\n"
