"""A SASL exchange (auth/service.py ``LoginSession``) logs in to the account
record whose credentials it proved, and only if that record is still the
account's at the end of the exchange: a removal, a new account under the
same address, or a password change in between refuses it."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gc
import logging
import weakref

import pytest

from mailyard.auth import sasl
from mailyard.auth.passwords import hash_password, make_scram_sha256
from mailyard.auth.service import LoginService, LoginSession
from mailyard.auth.throttle import LoginThrottle, ThrottlePolicy
from mailyard.store.api import Account

from ..integration.test_tls_auth import ScramClient

ALICE = "alice@example.test"
IP = "192.0.2.7"
PASSWORD = "a-good-long-password"
RECORD = Account(1, ALICE, hash_password(PASSWORD), epoch=3)


class ChangingStore:
    """``get_account`` answers from ``answers`` in turn (the last one again
    when they run out): the account as each lookup finds it."""

    def __init__(self, *answers: Account | None) -> None:
        self.answers = list(answers)

    async def get_account(self, name: str) -> Account | None:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


async def plain_login(*answers: Account | None) -> tuple[object, Account | None]:
    session = LoginService(ChangingStore(*answers), LoginThrottle(ThrottlePolicy())).session(IP, "imap")  # type: ignore[arg-type]
    mech = sasl.PlainMechanism()
    ev = await session.sasl(mech, mech.begin(base64.b64encode(b"\0" + ALICE.encode() + b"\0" + PASSWORD.encode())))
    account = await session.account(ev) if isinstance(ev, sasl.Success) else None
    # the connection's login side keeps no account record, with its secrets, after the exchange
    assert not [v for v in vars(session).values() if isinstance(v, Account)]
    return ev, account


async def test_plain_logs_in_to_the_account_it_proved() -> None:
    ev, account = await plain_login(RECORD)
    assert isinstance(ev, sasl.Success) and account == RECORD


async def test_plain_is_refused_when_the_password_changed_after_its_check() -> None:
    ev, account = await plain_login(RECORD, dataclasses.replace(RECORD, epoch=4))
    assert isinstance(ev, sasl.Failure) and ev.kind == "invalid-credentials" and account is None
    assert ev.reason == "credentials changed during the exchange"


async def test_plain_never_logs_in_to_a_new_account_of_the_same_address() -> None:
    ev, account = await plain_login(RECORD, dataclasses.replace(RECORD, id=2, epoch=0))
    assert isinstance(ev, sasl.Failure) and account is None



class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def scram_started() -> tuple[Clock, LoginService, object, sasl.ScramSha256Mechanism, ScramClient]:
    """A SCRAM-SHA-256 exchange with the right password, after the server-first message."""
    record = dataclasses.replace(RECORD, scram_sha256=make_scram_sha256(PASSWORD))
    clock = Clock()
    service = LoginService(ChangingStore(record), LoginThrottle(ThrottlePolicy()), clock=clock)  # type: ignore[arg-type]
    session = service.session(IP, "imap")
    client = ScramClient(ALICE, PASSWORD)
    mech = sasl.ScramSha256Mechanism()
    first = await session.sasl(mech, mech.begin(base64.b64encode(client.first())))
    assert isinstance(first, sasl.Challenge)
    client.server_first = first.data
    return clock, service, session, mech, client


async def scram_exchange_parts(wait: float) -> tuple[object, LoginService, object, sasl.ScramSha256Mechanism, Clock]:
    """... and its proof, ``wait`` seconds after the server-first message."""
    clock, service, session, mech, client = await scram_started()
    clock.now += wait
    answer = await session.sasl(mech, mech.step(base64.b64encode(client.final(client.server_first))))
    return answer, service, session, mech, clock


async def scram_exchange(wait: float) -> tuple[object, LoginService]:
    answer, service, _session, _mech, _clock = await scram_exchange_parts(wait)
    return answer, service


async def test_scram_proof_in_time_gets_the_server_final_message() -> None:
    answer, _service = await scram_exchange(1.0)
    assert isinstance(answer, sasl.Challenge) and answer.data.startswith(b"v=")


async def test_scram_proof_after_the_exchange_deadline_is_refused_unsaid() -> None:
    """A proof later than SASL_EXCHANGE_MAX (the PostgreSQL throttle may have
    let its reservation go meanwhile) is a failure, counted, and gets no
    server-final ``v=`` that would tell a right password from a wrong one."""
    from mailyard.auth.service import SASL_EXCHANGE_MAX

    answer, service = await scram_exchange(SASL_EXCHANGE_MAX + 1)
    assert isinstance(answer, sasl.Failure) and answer.kind == "invalid-credentials"
    assert answer.reason == "exchange took too long"
    assert service.throttle._accounts.entries[ALICE].failures == 1


async def test_scram_final_empty_message_after_a_proof_in_time_is_not_late() -> None:
    """IMAP and POP3 send the server-final ``v=`` as a challenge and wait for
    an empty message (RFC 5802 5, RFC 9051 6.2.2): the proof was judged in
    time, so a slow empty message still ends the exchange as a login."""
    from mailyard.auth.service import SASL_EXCHANGE_MAX

    answer, service, session, mech, clock = await scram_exchange_parts(1.0)
    assert isinstance(answer, sasl.Challenge) and answer.data.startswith(b"v=")
    clock.now += SASL_EXCHANGE_MAX + 1
    assert isinstance(await session.sasl(mech, mech.step(b"")), sasl.Success)


async def test_a_malformed_message_after_the_deadline_is_answered_as_malformed() -> None:
    """The deadline refuses a late proof; a late message that is no proof at
    all keeps its own answer (IMAP BAD for a malformed exchange), counted."""
    from mailyard.auth.service import SASL_EXCHANGE_MAX

    clock, service, session, mech, client = await scram_started()
    clock.now += SASL_EXCHANGE_MAX + 1
    answer = await session.sasl(mech, mech.step(b"not base64 at all!"))
    assert isinstance(answer, sasl.Failure) and answer.kind == "malformed"
    assert service.throttle._accounts.entries[ALICE].failures == 1


async def test_plain_refused_at_its_end_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mailyard.auth"):
        await plain_login(RECORD, dataclasses.replace(RECORD, epoch=4))
    assert any("auth_aborted" in r.getMessage() and "credentials changed" in r.getMessage() for r in caplog.records)


async def test_an_expired_exchange_does_not_keep_its_mechanism_alive() -> None:
    """The deadline ends a SCRAM exchange after the server-first message:
    the failure is handed to a protocol that still holds the mechanism, and
    one that dropped it (whatever its reason) leaves nothing alive in the
    session, whose record of the expiry holds the mechanism, with the
    account's SCRAM keys, only weakly."""
    record = dataclasses.replace(RECORD, scram_sha256=make_scram_sha256(PASSWORD))
    service = LoginService(ChangingStore(record), LoginThrottle(ThrottlePolicy()))  # type: ignore[arg-type]

    async def expired_exchange() -> tuple[LoginSession, sasl.ScramSha256Mechanism]:
        expired = asyncio.Event()
        session = LoginSession(service, IP, "imap", deadline=0.01, on_expired=expired.set)
        mech = sasl.ScramSha256Mechanism()
        first = await session.sasl(mech, mech.begin(base64.b64encode(ScramClient(ALICE, PASSWORD).first())))
        assert isinstance(first, sasl.Challenge)
        await expired.wait()
        return session, mech

    session, mech = await expired_exchange()
    failure = session.expiry(mech)
    assert isinstance(failure, sasl.Failure) and failure.reason == "exchange took too long"
    assert session.expiry(mech) is None  # handed over once

    session, mech = await expired_exchange()
    gone = weakref.ref(mech)
    del mech
    gc.collect()
    assert gone() is None
    assert service.throttle._accounts.entries[ALICE].failures == 2
