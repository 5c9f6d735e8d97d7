"""The sender rule on a redirected message (RFC 5322 3.6.6): the resent block
on top must name the user; the original author may be elsewhere, but never
an address of this server that is not the user's own."""

from __future__ import annotations

import pytest

from tests.conftest import RunningServer

from .test_sender_ownership import BOB, message, submit

RESENT = "Resent-From: Alice <alice@example.test>\nResent-To: bob@example.test\nResent-Date: Sat, 5 Dec 2026 06:00:00 +0000"


@pytest.mark.parametrize(
    "headers",
    [
        f"{RESENT}\nFrom: The CEO <ceo@bigcorp.test>\nSender: list@bigcorp.test",
        # an earlier redirection (by someone elsewhere) below the user's own block
        f"{RESENT}\nResent-From: joe@elsewhere.test\nResent-Date: Fri, 4 Dec 2026 06:00:00 +0000\n"
        "From: ceo@bigcorp.test",
        # trace fields a delivery wrote above the block do not hide it
        f"Received: from a by b; Sat, 5 Dec 2026 06:00:00 +0000\n{RESENT}\nFrom: ceo@bigcorp.test",
    ],
)
def test_redirect_with_own_resent_block_is_accepted(mailserver: RunningServer, headers: str) -> None:
    reply = submit(mailserver, "smtps", message(headers))
    assert reply.startswith(b"250 "), reply
    assert len(mailserver.messages(BOB)) == 1


@pytest.mark.parametrize(
    ("headers", "refusal"),
    [
        # the resent block names someone else
        ("Resent-From: bob@example.test\nFrom: ceo@bigcorp.test",
         b"550 5.7.1 Resent-From <bob@example.test> is not an address of alice@example.test"),
        ("Resent-From: ceo@bigcorp.test\nFrom: ceo@bigcorp.test",
         b"550 5.7.1 Resent-From <ceo@bigcorp.test> is not an address of alice@example.test"),
        (f"{RESENT}\nResent-Sender: ceo@bigcorp.test\nFrom: ceo@bigcorp.test",
         b"550 5.7.1 Resent-Sender <ceo@bigcorp.test> is not an address of alice@example.test"),
        # a local author that is not the user: no spoofing a colleague through a resent block
        (f"{RESENT}\nFrom: Bob <bob@example.test>",
         b"550 5.7.1 From <bob@example.test> is not an address of alice@example.test"),
        (f"{RESENT}\nFrom: ceo@bigcorp.test\nSender: nobody@example.test",
         b"550 5.7.1 Sender <nobody@example.test> is not an address of alice@example.test"),
        # a block that is not on top is no redirection: From is the author
        ("From: ceo@bigcorp.test\nResent-From: alice@example.test",
         b"550 5.7.1 From <ceo@bigcorp.test> is not an address of alice@example.test"),
        # a resent block without Resent-From is none either
        ("Resent-Date: Sat, 5 Dec 2026 06:00:00 +0000\nFrom: ceo@bigcorp.test",
         b"550 5.7.1 From <ceo@bigcorp.test> is not an address of alice@example.test"),
    ],
)
def test_redirect_refusals(mailserver: RunningServer, headers: str, refusal: bytes) -> None:
    assert submit(mailserver, "smtps", message(headers)) == refusal
    assert mailserver.messages(BOB) == []
