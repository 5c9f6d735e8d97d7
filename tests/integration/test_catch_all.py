"""Catch-all aliases (``@domain``) and domain aliases through SMTP (smtplib)
on a real server over the SQLite store."""

from __future__ import annotations

import smtplib
import ssl

import pytest

from mailyard.store.api import StoreError
from mailyard.store.sqlite import SQLiteStore
from tests.conftest import USERS, RunningServer


def message(to: str, subject: str) -> bytes:
    return (f"From: carol@remote.test\r\nTo: {to}\r\nSubject: {subject}\r\n"
            "Message-ID: <x@remote.test>\r\n\r\nhello\r\n").encode()


def send(server: RunningServer, rcpt: str, subject: str) -> None:
    with smtplib.SMTP(server.host, server.port("smtp"), local_hostname="client.remote.test", timeout=10) as s:
        assert s.sendmail("carol@remote.test", [rcpt], message(rcpt, subject)) == {}


def rcpt_reply(server: RunningServer, rcpt: str) -> tuple[int, bytes]:
    with smtplib.SMTP(server.host, server.port("smtp"), local_hostname="client.remote.test", timeout=10) as s:
        s.ehlo()
        s.mail("carol@remote.test")
        return s.rcpt(rcpt)


def subjects(server: RunningServer, address: str) -> list[str]:
    out = []
    for raw in server.messages(address):
        for line in raw.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                out.append(line[9:].decode())
    return out


@pytest.fixture
def server(make_server) -> RunningServer:
    async def seed(store: SQLiteStore) -> None:
        # seed_store already made example.test with alice and bob
        await store.add_alias("info@example.test", ["bob@example.test"])
        await store.add_alias("@example.test", ["alice@example.test"])  # the catch-all
        await store.add_domain("plain.test")  # a domain without a catch-all
        await store.add_account("dora@plain.test", "!locked")
        await store.add_domain_alias("example.net", "example.test")

    return make_server(seed=seed)


def test_catch_all_takes_unknown_local_parts_only(server: RunningServer) -> None:
    send(server, "nobody-here@example.test", "to an unknown local part")
    send(server, "bob@example.test", "to bob")
    send(server, "info@example.test", "to an alias of bob")
    assert subjects(server, "alice@example.test") == ["to an unknown local part"]
    assert subjects(server, "bob@example.test") == ["to bob", "to an alias of bob"]


def test_unknown_local_part_without_catch_all_is_still_550(server: RunningServer) -> None:
    code, text = rcpt_reply(server, "nobody@plain.test")
    assert code == 550 and text.startswith(b"5.1.1"), (code, text)
    assert rcpt_reply(server, "dora@plain.test")[0] == 250


def test_domain_alias_delivers_the_same_local_part(server: RunningServer) -> None:
    assert rcpt_reply(server, "bob@example.net")[0] == 250  # a local domain for RCPT and relay rules
    send(server, "bob@Example.NET", "bob at the alias domain")
    assert subjects(server, "bob@example.test") == ["bob at the alias domain"]
    # An unknown local part at the alias domain meets the target's catch-all.
    send(server, "someone@example.net", "unknown at the alias domain")
    assert subjects(server, "alice@example.test") == ["unknown at the alias domain"]


def test_domain_alias_without_catch_all_refuses_unknown(make_server) -> None:
    async def seed(store: SQLiteStore) -> None:
        await store.add_domain_alias("example.net", "example.test")

    server = make_server(seed=seed)
    code, text = rcpt_reply(server, "nobody@example.net")
    assert code == 550 and text.startswith(b"5.1.1"), (code, text)
    send(server, "alice@example.net", "hi")
    assert subjects(server, "alice@example.test") == ["hi"]


def test_store_rules(server: RunningServer) -> None:
    store = server.store
    assert server.call(store.list_domain_aliases()) == {"example.net": "example.test"}
    assert server.call(store.list_aliases())["@example.test"] == ["alice@example.test"]
    assert "@example.net" not in server.call(store.list_aliases())
    with pytest.raises(StoreError, match="alias of example.test"):
        server.call(store.add_account("x@example.net", "!locked"))
    with pytest.raises(StoreError, match="domain alias remove"):
        server.call(store.remove_domain("example.net"))
    with pytest.raises(StoreError, match="target of the domain alias"):
        server.call(store.remove_domain("example.test"))
    server.call(store.remove_domain_alias("example.net"))
    assert not server.call(store.is_local_domain("example.net"))
    server.call(store.remove_alias("@example.test"))
    code, _ = rcpt_reply(server, "nobody-here@example.test")
    assert code == 550


def test_catch_all_gives_no_right_to_send_as_unknown_addresses(server: RunningServer) -> None:
    """The catch-all's target may not send as the local parts it catches; a
    domain alias's addresses are the user's own."""
    ctx = ssl.create_default_context(cafile=str(server.data_dir / "tls" / "cert.pem"))
    with smtplib.SMTP(server.host, server.port("submission"), timeout=10) as s:
        s.starttls(context=ctx)
        s.login("alice@example.test", USERS["alice@example.test"])
        code, text = s.mail("ceo@example.test")
        assert code == 553, (code, text)
        s.rset()
        assert s.mail("alice@example.net")[0] == 250
