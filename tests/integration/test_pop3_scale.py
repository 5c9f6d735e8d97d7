"""POP3's first look at a big maildrop (net/pop3.py MaildropCache): the exact
sizes LIST and STAT report come from reading every message once, and that is
done in batches (``Store.read_messages``), not with one store call per
message; bare-LF messages anywhere in the maildrop still get their CRLF size."""

from __future__ import annotations

import pytest

from mailyard.net import pop3
from tests.conftest import RunningServer
from tests.integration.test_pop3 import ALICE, login, message, pop3_bytes, put, retr

MESSAGES = 600


@pytest.fixture
def pop3server(mailserver: RunningServer) -> RunningServer:
    return mailserver


def test_first_login_reads_the_maildrop_in_batches(pop3server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    store = pop3server.store
    calls = {"read_message": 0, "read_messages": 0}
    read_message, read_messages = store.read_message, getattr(store, "read_messages", None)

    async def counted_one(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["read_message"] += 1
        return await read_message(*args, **kwargs)

    async def counted_many(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["read_messages"] += 1
        assert read_messages is not None
        return await read_messages(*args, **kwargs)

    put(pop3server, ALICE, *(message(n) for n in range(MESSAGES - 2)))

    async def append_unix() -> None:
        account = await store.get_account(ALICE)
        assert account is not None
        box = await store.get_mailbox(account.id, "INBOX")
        assert box is not None
        await store.append(box, b"Subject: unix\n\nbare LF body\n")
        await store.append(box, b"Subject: unix 2\n\nno final newline")

    pop3server.call(append_unix())
    monkeypatch.setattr(store, "read_message", counted_one)
    monkeypatch.setattr(store, "read_messages", counted_many, raising=False)
    # small batches by bytes too: the two bare-LF messages fall in the last one
    monkeypatch.setattr(pop3, "SIZE_CHECK_BYTES", 20_000, raising=False)
    stored = pop3server.messages(ALICE)
    calls.update(read_message=0, read_messages=0)
    p = login(pop3server)
    _, listing, _ = p.list()
    assert [int(line.split()[1]) for line in listing] == [len(pop3_bytes(m)) for m in stored]
    assert p.stat() == (MESSAGES, sum(len(pop3_bytes(m)) for m in stored))
    print(f"first login on {MESSAGES} messages: {calls}")
    assert calls["read_message"] == 0
    total = sum(len(m) for m in stored)
    assert 0 < calls["read_messages"] <= total // 20_000 + 2
    assert retr(p, MESSAGES - 1) == b"Subject: unix\r\n\r\nbare LF body\r\n"
    assert retr(p, MESSAGES) == b"Subject: unix 2\r\n\r\nno final newline\r\n"
    p.quit()
    # a second login reads nothing: the sizes are known
    calls.update(read_message=0, read_messages=0)
    p = login(pop3server)
    assert p.stat() == (MESSAGES, sum(len(pop3_bytes(m)) for m in stored))
    p.quit()
    assert calls == {"read_message": 0, "read_messages": 0}
