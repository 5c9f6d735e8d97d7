"""The login throttle through the real interfaces: SMTP AUTH, IMAP, POP3 and
webmail on a running server, all sharing one login service (auth/service.py).

- Reserve, then verify: a parallel burst gets exactly the budget a sequence
  gets (verifications counted by a spy on the hasher, held while the burst
  arrives so every attempt is in flight at once), and a right password sent
  while the budget is taken by attempts in flight is refused.
- Every spelling of a name (case, trailing dot, IDNA and Unicode forms of the
  domain) shares one counter, for accounts and unknown names alike.
- SCRAM: no keys for a name over its limit, wrong proofs and cancelled
  exchanges count, fake salts are stable across spellings and restarts.
- Over a limit every protocol gives its temporary reply, the same for a right
  and a wrong password and for known and unknown names.
- Fairness: failures against bob from an address do not delay alice's login
  from it; bob's success resets bob's delay there; neither gives the address
  its failure budget back.

No wall-clock time is asserted: delays are read from the service's sleep hook.
"""

from __future__ import annotations

import base64
import functools
import gc
import hashlib
import hmac
import imaplib
import logging
import re
import select
import stat
import threading
import time
import unicodedata
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mailyard.config import Config
from tests.conftest import USERS, RunningServer, make_test_config
from tests.integration.test_security import Wire, b64
from tests.integration.test_tls_auth import ScramClient

httpx = pytest.importorskip("httpx")

ALICE = "alice@example.test"
BOB = "bob@example.test"
NOBODY = "nobody@example.test"
WRONG = "wrong-password-77"
CAROL = "carol@bücher.test"
CAROL_PASSWORD = "carol-password-3"

# The start of each protocol's reply to a wrong password, and to any attempt
# over a limit (RFC 4954 6, RFC 9051 7.1, RFC 3206 4).
WRONG_REPLY = {"smtp": b"535 5.7.8", "imap": b"a NO [AUTHENTICATIONFAILED]", "pop3": b"-ERR [AUTH]",
               "apop": b"-ERR [AUTH]", "web": b"401 "}
TEMPORARY = {"smtp": b"454 4.7.0", "imap": b"a NO [UNAVAILABLE]", "pop3": b"-ERR [SYS/TEMP]",
             "apop": b"-ERR [SYS/TEMP]", "web": b"429 Too many attempts, try again in "}
OK_REPLY = {"smtp": b"235 ", "imap": b"a OK ", "pop3": b"+OK", "apop": b"+OK", "web": b"303 "}
PROTOCOLS = ["smtp", "imap", "pop3", "web"]


def limits(account: int = 10_000, ip: int = 10_000) -> Callable[[Config], None]:
    """Tiny delays and the given limits, so a test can fail many logins quickly."""

    def configure(cfg: Config) -> None:
        cfg.auth.base_delay = 0.001
        cfg.auth.max_delay = 0.002
        cfg.auth.account_max_failures = account
        cfg.auth.ip_max_failures = ip

    return configure


def login(server: RunningServer, proto: str, user: str, password: str) -> bytes:
    """One login on a fresh connection; the server's final reply to it."""
    if proto == "web":
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port('http')}", timeout=60) as client:
            token = re.search(r'name="login_token" value="([^"]+)"', client.get("/login").text).group(1)
            r = client.post("/login", data={"username": user, "password": password, "login_token": token})
            error = re.search(r'id="login-error">([^<]*)<', r.text)
            return f"{r.status_code} {error.group(1) if error else ''}".encode()
    port = {"smtp": "submission", "imap": "imap"}.get(proto, "pop3")
    w = Wire(server.port(port))
    try:
        greeting = w.line()
        if proto == "smtp":
            w.smtp("EHLO client.example.test")
            return w.smtp(b"AUTH PLAIN " + b64(f"\0{user}\0{password}"))
        if proto == "imap":
            return w.imap(f'a LOGIN "{user}" "{password}"', b"a").splitlines(keepends=True)[-1]
        if proto == "apop":
            stamp = re.search(rb"<[^>]+>", greeting).group(0)
            digest = hashlib.md5(stamp + ("apop-" + password).encode()).hexdigest()
            return w.cmd(f"APOP {user} {digest}")
        assert w.cmd(f"USER {user}") == b"+OK\r\n"
        return w.cmd(f"PASS {password}")
    finally:
        w.close()


class Verifications:
    """A spy on the argon2 verifier: counts verifications, and can hold them
    (the verifying threads wait) so a burst is all in flight at once."""

    def __init__(self) -> None:
        self.count = 0
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> Verifications:
    import mailyard.auth.passwords as passwords

    real = passwords._verify_hash
    spy = Verifications()

    def verify(stored: str, password: str) -> bool:
        with spy._lock:
            spy.count += 1
        spy.gate.wait(30)
        return real(stored, password)

    monkeypatch.setattr(passwords, "_verify_hash", verify)
    yield spy
    spy.release()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def budget_held(server: RunningServer, name: str) -> bool:
    """Whether a login for ``name`` from 127.0.0.1 now would have to wait for
    attempts in flight (the throttle is asked on the server's loop)."""
    from mailyard.auth.throttle import Busy

    async def ask() -> bool:
        service = server.server.login
        return isinstance(service.throttle.before_attempt("127.0.0.1", name, service.clock()), Busy)

    return server.call(ask())


# --- 4. reserve, then verify ------------------------------------------------------------


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_parallel_burst_gets_the_limit_of_a_sequence(
    make_server: Callable[..., RunningServer], verifications: Verifications, proto: str
) -> None:
    """30 wrong passwords for alice at once, then her right one while they are
    in flight: 5 verifications (the account's budget); the other attempts wait
    for those 5, and once they have failed, the right password is refused
    with the temporary reply like the other 25."""
    server = make_server(limits(account=5))
    burst = 30
    verifications.hold()
    with ThreadPoolExecutor(burst + 1) as pool:
        wrong = [pool.submit(login, server, proto, ALICE, WRONG) for _ in range(burst)]
        try:
            # The budget's worth of attempts is in flight; the rest wait for them.
            assert wait_for(lambda: budget_held(server, ALICE))
            right = pool.submit(login, server, proto, ALICE, USERS[ALICE])
        finally:
            verifications.release()
        replies = [f.result(60) for f in wrong]
        right_reply = right.result(60)
    print(f"{proto}: {verifications.count} verifications for {burst + 1} parallel attempts")
    assert verifications.count == 5
    assert right_reply.startswith(TEMPORARY[proto]), right_reply
    assert sum(r.startswith(WRONG_REPLY[proto]) for r in replies) == 5
    assert sum(r.startswith(TEMPORARY[proto]) for r in replies) == burst - 5


def test_parallel_burst_across_protocols_meets_the_address_limit(
    make_server: Callable[..., RunningServer], verifications: Verifications
) -> None:
    """40 guesses for 40 different names, 10 over each protocol, all at once
    from one address: the address's budget (8) of verifications, no more."""
    server = make_server(limits(ip=8))
    verifications.hold()
    with ThreadPoolExecutor(40) as pool:
        futures = [
            pool.submit(login, server, proto, f"guess{i}.{proto}@example.test", WRONG)
            for i in range(10) for proto in PROTOCOLS
        ]
        try:
            assert wait_for(lambda: budget_held(server, "guess0.smtp@example.test"))
        finally:
            verifications.release()
        replies = [f.result(60) for f in futures]
    print(f"{verifications.count} verifications for 40 parallel guesses over 4 protocols")
    assert verifications.count == 8
    assert sum(any(r.startswith(t) for t in TEMPORARY.values()) for r in replies) == 32
    # The address is locked now, for every name and every password.
    for proto in PROTOCOLS:
        assert login(server, proto, BOB, USERS[BOB]).startswith(TEMPORARY[proto])


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_parallel_correct_logins_are_all_served(
    make_server: Callable[..., RunningServer], verifications: Verifications, proto: str
) -> None:
    """Twenty logins of one account with its right password at once (a mail
    client's parallel connections, a benchmark): the budget of 5 holds them
    to 5 at a time, and every one of them logs in."""
    server = make_server(limits(account=5))
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda _: login(server, proto, ALICE, USERS[ALICE]), range(20)))
    # RFC 2449 8: one POP3 session per maildrop; the others are told it is in use
    ok = [r for r in replies if r.startswith(OK_REPLY[proto]) or (proto == "pop3" and b"[IN-USE]" in r)]
    assert len(ok) == 20, [r for r in replies if r not in ok]
    assert verifications.count == 20


# --- 5. one counter per account, whatever the spelling ---------------------------------------


async def _seed_idn(store) -> None:  # noqa: ANN001
    from mailyard.auth.passwords import Credentials

    await store.add_domain("bücher.test")
    creds = Credentials.from_password(CAROL_PASSWORD)
    await store.add_account(CAROL, creds.password_hash, scram_sha256=creds.scram_sha256)


def test_spellings_of_one_account_share_one_counter(
    make_server: Callable[..., RunningServer], verifications: Verifications
) -> None:
    server = make_server(limits(account=3), seed=_seed_idn)
    # Three failures, each under another spelling of alice's address.
    for spelling in ("ALICE@EXAMPLE.TEST", "alice@example.test.", "Alice@Example.Test."):
        assert login(server, "imap", spelling, WRONG).startswith(WRONG_REPLY["imap"])
    for spelling in (ALICE, "alice@EXAMPLE.test", "ALICE@example.test."):
        assert login(server, "imap", spelling, USERS[ALICE]).startswith(TEMPORARY["imap"]), spelling
    # IDNA and Unicode forms of the domain (SASL PLAIN carries UTF-8, RFC 4616).
    nfd = unicodedata.normalize("NFD", "carol@bücher.test")
    for spelling in ("carol@BÜCHER.test", "carol@xn--bcher-kva.test", nfd):
        assert login(server, "smtp", spelling, WRONG).startswith(WRONG_REPLY["smtp"]), spelling
    for spelling in (CAROL, "carol@XN--BCHER-KVA.test.", nfd):
        assert login(server, "smtp", spelling, CAROL_PASSWORD).startswith(TEMPORARY["smtp"]), spelling
    # Unknown names: keyed on their normal form, locked the same way.
    for spelling in ("NOBODY@example.test", "nobody@EXAMPLE.test.", "Nobody@Example.Test"):
        assert login(server, "pop3", spelling, WRONG).startswith(WRONG_REPLY["pop3"])
    assert login(server, "pop3", NOBODY, WRONG).startswith(TEMPORARY["pop3"])
    assert verifications.count == 9  # nothing verified once locked


def test_a_success_under_any_spelling_clears_only_that_account(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(limits(account=3))
    for user in (ALICE, "alice@example.test.", BOB, "BOB@example.test."):
        assert login(server, "imap", user, WRONG).startswith(WRONG_REPLY["imap"])
    assert login(server, "imap", "ALICE@Example.Test.", USERS[ALICE]).startswith(OK_REPLY["imap"])
    # Alice starts afresh: two more failures do not lock her.
    for _ in range(2):
        assert login(server, "imap", ALICE, WRONG).startswith(WRONG_REPLY["imap"])
    assert login(server, "imap", ALICE, USERS[ALICE]).startswith(OK_REPLY["imap"])
    # Bob's count was kept: one more failure locks him.
    assert login(server, "imap", "bob@EXAMPLE.TEST", WRONG).startswith(WRONG_REPLY["imap"])
    assert login(server, "imap", BOB, USERS[BOB]).startswith(TEMPORARY["imap"])


# --- 6. SCRAM goes through the throttle ------------------------------------------------------------


def _scram_start(w: Wire, proto: str, user: str) -> tuple[bytes, ScramClient]:
    """Start AUTH SCRAM-SHA-256 with an initial response; the server's first reply."""
    scram = ScramClient(user, "whatever")
    if proto == "smtp":
        w.smtp("EHLO client.example.test")
        return w.smtp(b"AUTH SCRAM-SHA-256 " + b64(scram.first())), scram
    if proto == "imap":
        return w.cmd(b"a AUTHENTICATE SCRAM-SHA-256 " + b64(scram.first())), scram
    return w.cmd(b"AUTH SCRAM-SHA-256 " + b64(scram.first())), scram


def _server_first(reply: bytes) -> bytes:
    return base64.b64decode(reply.split(b" ", 1)[1].strip())


def test_pop3_scram_gives_no_keys_for_a_locked_account(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(limits(account=3))
    for _ in range(3):
        assert login(server, "pop3", ALICE, WRONG).startswith(WRONG_REPLY["pop3"])
    w = Wire(server.port("pop3"))
    try:
        w.line()
        reply, _ = _scram_start(w, "pop3", ALICE)
    finally:
        w.close()
    assert reply.startswith(b"-ERR [SYS/TEMP]"), reply  # no "+ r=...,s=salt,i=..."


def test_pop3_scram_wrong_proofs_are_counted(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(limits(account=3))
    for _ in range(3):
        w = Wire(server.port("pop3"))
        try:
            w.line()
            reply, scram = _scram_start(w, "pop3", BOB)
            assert reply.startswith(b"+ ")
            assert w.cmd(b64(scram.final(_server_first(reply)))).startswith(b"-ERR [AUTH]")
        finally:
            w.close()
    # Locked: the right password gets the temporary reply, over every way in.
    assert login(server, "pop3", BOB, USERS[BOB]).startswith(TEMPORARY["pop3"])
    assert login(server, "apop", BOB, USERS[BOB]).startswith(TEMPORARY["apop"])


def test_a_cancelled_exchange_counts_as_a_failure(make_server: Callable[..., RunningServer]) -> None:
    """One SCRAM exchange cancelled with "*" after the server-first message, on
    each of SMTP, IMAP and POP3: three failures lock the account (limit 3)."""
    server = make_server(limits(account=3))
    cancelled = {"smtp": b"501 ", "imap": b"a BAD ", "pop3": b"-ERR "}
    for proto, port in (("smtp", "submission"), ("imap", "imap"), ("pop3", "pop3")):
        w = Wire(server.port(port))
        try:
            w.line()
            reply, _ = _scram_start(w, proto, ALICE)
            assert reply.startswith(b"334 " if proto == "smtp" else b"+ "), reply
            answer = w.smtp("*") if proto == "smtp" else w.cmd("*")
            assert answer.startswith(cancelled[proto]), answer
        finally:
            w.close()
    assert login(server, "imap", ALICE, USERS[ALICE]).startswith(TEMPORARY["imap"])


# --- 6b. the SASL exchange deadline ------------------------------------------------------------


def _with_sasl_deadline(cfg: Config, account: int = 1) -> None:
    """``account`` attempts in alice's budget, and a SASL exchange deadline
    of 4 s: short for a test, long enough that a test thread stalled for a
    moment does not miss what happens before it; the idle timeout and the
    command deadline well past it."""
    limits(account=account)(cfg)
    cfg.limits.sasl_deadline = 4.0
    cfg.limits.idle_timeout = 30.0
    cfg.limits.command_deadline = 30.0


def _account_entry(server: RunningServer, name: str) -> tuple[int, int]:
    """(failures, pending) of ``name`` in the server's login throttle."""

    async def read() -> tuple[int, int]:
        entry = server.server.login.throttle._accounts.entries.get(name)
        return (entry.failures, entry.pending) if entry is not None else (0, 0)

    return server.call(read())


# per protocol: the port; the reply to an exchange the client left silent
# past the deadline, and the temporary one to a SCRAM client whose proof was
# right, which says why (RFC 4954 6, RFC 9051 6.2.2 and 7.1, RFC 5034 4 and
# RFC 3206 4, RFC 5804 2.1 and 1.3); a command that shows the connection goes
# on, and its reply
SILENT = {
    "smtp": ("submission", b"535 5.7.8 ", b"454 4.7.0 Temporary authentication failure, try again later\r\n",
             b"NOOP", b"250 "),
    "imap": ("imap", b"a NO [AUTHENTICATIONFAILED] ",
             b"a NO [UNAVAILABLE] Authentication took too long, try again\r\n", b"b NOOP", b"b OK "),
    "pop3": ("pop3", b"-ERR [AUTH] ", b"-ERR [SYS/TEMP] Authentication took too long, try again\r\n",
             b"CAPA", b"+OK"),
    "managesieve": ("managesieve", b'NO "authentication failed"',
                    b'NO (TRYLATER) "authentication took too long, try again"\r\n', b"NOOP", b"OK "),
}


class _Exchange:
    """A client of one protocol of ``SILENT`` that runs SASL exchanges by
    hand: AUTH (SMTP, POP3) or AUTHENTICATE (IMAP, ManageSieve)."""

    def __init__(self, server: RunningServer, proto: str) -> None:
        self.proto = proto
        self.w = Wire(server.port(SILENT[proto][0]))
        if proto == "managesieve":
            while not self.w.line().startswith(b"OK "):
                pass
        else:
            self.w.line()
            if proto == "smtp":
                self.w.smtp("EHLO client.example.test")

    def reply(self) -> bytes:
        """The server's next reply (a challenge or the exchange's end)."""
        return self.w.smtp() if self.proto == "smtp" else self.w.line()

    def start(self, mechanism: str, initial: bytes | None = None) -> bytes:
        arg = b"" if initial is None else b" " + b64(initial)
        if self.proto == "managesieve":
            arg = b"" if initial is None else b' "' + b64(initial) + b'"'
            self.w.send(b'AUTHENTICATE "' + mechanism.encode() + b'"' + arg + b"\r\n")
        else:
            verb = b"a AUTHENTICATE " if self.proto == "imap" else b"AUTH "
            self.w.send(verb + mechanism.encode() + arg + b"\r\n")
        return self.reply()

    def answer(self, data: bytes) -> bytes:
        """Send ``data`` as the response to the last challenge; the reply."""
        self.w.send((b'"' + b64(data) + b'"' if self.proto == "managesieve" else b64(data)) + b"\r\n")
        return self.reply()

    def challenge(self, reply: bytes) -> bytes:
        """The data of a challenge (``334 ``, ``+ ``, a ManageSieve string)."""
        if self.proto == "managesieve":
            assert reply.startswith(b'"'), reply
            return base64.b64decode(reply.strip().strip(b'"'))
        assert reply.startswith(b"334 " if self.proto == "smtp" else b"+ "), reply
        return base64.b64decode(reply.split(b" ", 1)[1].strip())

    def goes_on(self) -> None:
        """The connection is usable after the exchange ended."""
        _, _, _, command, ok = SILENT[self.proto]
        assert self.w.cmd(command).startswith(ok)
        if self.proto == "pop3":
            while self.w.line() != b".\r\n":  # the rest of CAPA's answer
                pass


@pytest.fixture
def mechanisms(monkeypatch: pytest.MonkeyPatch) -> Callable[[RunningServer], int]:
    """Every SASL mechanism the server starts is watched: the returned
    function says how many of them are still alive (after a full
    collection, on the server's loop). A SCRAM mechanism holds the account's
    StoredKey and ServerKey: no connection may keep one past its exchange."""
    from mailyard.auth import sasl

    made: list[weakref.ref[sasl.Mechanism]] = []
    real = sasl.start

    def start(name: str) -> sasl.Mechanism:
        mech = real(name)
        made.append(weakref.ref(mech))
        return mech

    monkeypatch.setattr(sasl, "start", start)

    def alive(server: RunningServer) -> int:
        async def count() -> int:
            gc.collect()
            return sum(ref() is not None for ref in made)

        assert made, "no mechanism was started"
        return server.call(count())

    return alive


def _lines(caplog: pytest.LogCaptureFixture, event: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(event + " ")]


@pytest.mark.parametrize("proto", list(SILENT))
def test_a_silent_sasl_exchange_ends_at_its_deadline_and_releases_the_attempt(
    make_server: Callable[..., RunningServer], proto: str, caplog: pytest.LogCaptureFixture,
    mechanisms: Callable[[RunningServer], int],
) -> None:
    """A client that starts SCRAM-SHA-256 for alice and does not answer the
    server-first message holds the attempt reserved for it (alice's budget
    of one is taken: her own login would wait). At ``limits.sasl_deadline``
    the exchange ends with the protocol's failure reply, the attempt is
    settled as a failure, and the connection goes on. The proof that comes
    after that, right as it is, is no part of any exchange: no login,
    nothing counted again; and the connection keeps nothing of the
    exchange (the mechanism, which held alice's SCRAM keys, is gone)."""
    caplog.set_level(logging.INFO, logger="mailyard.auth")
    server = make_server(_with_sasl_deadline)
    client = _Exchange(server, proto)
    try:
        scram = ScramClient(ALICE, USERS[ALICE])
        server_first = client.challenge(client.start("SCRAM-SHA-256", scram.first()))
        assert budget_held(server, ALICE)  # the exchange holds alice's one attempt
        # the client says nothing more: the server ends the exchange
        answer = client.reply()
        assert answer.startswith(SILENT[proto][1]), answer
        assert _account_entry(server, ALICE) == (1, 0)  # settled, as a failure
        assert not budget_held(server, ALICE)
        client.goes_on()
        late = client.answer(scram.final(server_first))  # a command now, refused
        assert not late.startswith((b"334 ", b"+ ", b'"', b"235 ", b"+OK", b"OK")), late
        client.goes_on()
        assert _account_entry(server, ALICE) == (1, 0)
        assert len(_lines(caplog, "login_failed")) == 1 and _lines(caplog, "login") == []
        assert mechanisms(server) == 0
    finally:
        client.w.close()


@pytest.mark.parametrize("proto", list(SILENT))
def test_a_silent_exchange_that_reserved_nothing_is_not_a_failed_login(
    make_server: Callable[..., RunningServer], proto: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PLAIN without an initial response: the server's empty challenge waits
    for the client's credentials, and nothing is reserved or verified
    meanwhile. A client (or a slow human) that sends nothing gets the
    protocol's failure reply at the deadline, but it is no failed login:
    nothing counted, no ``login_failed`` line for fail2ban, an
    ``auth_aborted`` one instead."""
    caplog.set_level(logging.INFO, logger="mailyard.auth")
    server = make_server(_with_sasl_deadline)
    client = _Exchange(server, proto)
    try:
        assert client.challenge(client.start("PLAIN")) == b""
        answer = client.reply()
        assert answer.startswith(SILENT[proto][1]), answer
        assert _account_entry(server, ALICE) == (0, 0)
        assert _lines(caplog, "login_failed") == []
        aborted = _lines(caplog, "auth_aborted")
        assert len(aborted) == 1 and aborted[0].endswith(' reason="exchange took too long"'), aborted
        client.goes_on()
        # and the account may log in at once
        assert login(server, "smtp", ALICE, USERS[ALICE]).startswith(OK_REPLY["smtp"])
    finally:
        client.w.close()


@pytest.mark.parametrize("proto", list(SILENT))
def test_a_scram_client_late_only_with_its_last_message_gets_the_temporary_failure(
    make_server: Callable[..., RunningServer], proto: str, caplog: pytest.LogCaptureFixture,
    mechanisms: Callable[[RunningServer], int],
) -> None:
    """SCRAM with alice's right password: the proof is verified and the
    server-final message sent, and the client never sends the empty message
    that ends the exchange. Its password was right, so the deadline ends the
    exchange with the protocol's temporary failure (a client told
    "credentials invalid" may throw the password away), the attempt is
    settled as right credentials (no failure counted, no ``login_failed``),
    and no login happens."""
    caplog.set_level(logging.INFO, logger="mailyard.auth")
    server = make_server(_with_sasl_deadline)
    client = _Exchange(server, proto)
    try:
        scram = ScramClient(ALICE, USERS[ALICE])
        server_first = client.challenge(client.start("SCRAM-SHA-256", scram.first()))
        assert client.challenge(client.answer(scram.final(server_first))) == scram.expected_v
        answer = client.reply()
        assert answer == SILENT[proto][2], answer
        assert _account_entry(server, ALICE) == (0, 0)
        assert _lines(caplog, "login_failed") == [] and _lines(caplog, "login") == []
        aborted = _lines(caplog, "auth_aborted")
        assert len(aborted) == 1 and aborted[0].endswith(' reason="exchange took too long"'), aborted
        client.goes_on()
        assert mechanisms(server) == 0
    finally:
        client.w.close()


@pytest.mark.parametrize("cancel", [b"*", b"A" * 20_000], ids=["star", "line-too-long"])
def test_an_exchange_cancelled_after_an_expired_one_counts_and_is_settled(
    make_server: Callable[..., RunningServer], cancel: bytes
) -> None:
    """SMTP answers a cancelled exchange itself (``*``, RFC 4954 4, or a
    line over the AUTH line limit: 501, 500): an exchange after one the
    deadline ended is cancelled like any other, counted as a failure and
    its reservation settled."""
    server = make_server(functools.partial(_with_sasl_deadline, account=10))
    client = _Exchange(server, "smtp")
    try:
        client.challenge(client.start("SCRAM-SHA-256", ScramClient(ALICE, "whatever").first()))
        assert client.reply().startswith(b"535 5.7.8 ")
        assert _account_entry(server, ALICE) == (1, 0)
        client.challenge(client.start("SCRAM-SHA-256", ScramClient(ALICE, "whatever").first()))
        assert _account_entry(server, ALICE) == (1, 1)  # the second exchange holds an attempt
        assert client.w.smtp(cancel).startswith((b"501 ", b"500 "))
        assert _account_entry(server, ALICE) == (2, 0)
        client.goes_on()
    finally:
        client.w.close()


def test_a_pop3_response_line_over_the_limit_ends_the_exchange_and_settles_it(
    make_server: Callable[..., RunningServer]
) -> None:
    """RFC 5034 4: a response line over POP3's SASL line limit is dropped; the
    exchange ends there, counted and settled as a cancelled one, rather than
    being left open (holding its reservation) with the next line read as
    its answer."""
    server = make_server(functools.partial(_with_sasl_deadline, account=10))
    client = _Exchange(server, "pop3")
    try:
        client.challenge(client.start("SCRAM-SHA-256", ScramClient(ALICE, "whatever").first()))
        assert _account_entry(server, ALICE) == (0, 1)
        assert client.answer(b"A" * 20_000) == b"-ERR authentication line too long\r\n"
        assert _account_entry(server, ALICE) == (1, 0)
        client.goes_on()
    finally:
        client.w.close()


@pytest.mark.parametrize("proto", ["imap", "pop3", "managesieve"])
def test_a_last_scram_message_that_comes_after_the_deadline_gets_the_temporary_failure(
    make_server: Callable[..., RunningServer], proto: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As above, but the protocol cannot answer when the deadline passes (its
    ``sasl_expired`` does nothing here, as when a step runs then): the
    client's late empty message is what gets the temporary failure that the
    login service settled, with the same words."""
    from mailyard.net import imap, session_protocol

    monkeypatch.setattr(session_protocol.SessionProtocol, "sasl_expired", lambda self: None)
    monkeypatch.setattr(imap.ImapConnection, "sasl_expired", lambda self: None)
    server = make_server(_with_sasl_deadline)
    client = _Exchange(server, proto)
    try:
        scram = ScramClient(ALICE, USERS[ALICE])
        server_first = client.challenge(client.start("SCRAM-SHA-256", scram.first()))
        assert client.challenge(client.answer(scram.final(server_first))) == scram.expected_v
        assert _account_entry(server, ALICE) == (0, 1)
        # the deadline passes: settled as right credentials, and not answered
        assert wait_for(lambda: _account_entry(server, ALICE) == (0, 0))
        assert client.answer(b"") == SILENT[proto][2]
        client.goes_on()
    finally:
        client.w.close()


def test_a_managesieve_answer_that_is_not_a_string_ends_the_exchange_at_once(
    make_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture,
    mechanisms: Callable[[RunningServer], int],
) -> None:
    """RFC 5804 2.1: the client answers a challenge with a string. Anything
    else ends the exchange as a malformed message: its reservation settled
    and counted at once, as a cancel is, not held until the deadline, and
    the mechanism (with alice's SCRAM keys) dropped."""
    caplog.set_level(logging.INFO, logger="mailyard.auth")
    server = make_server(functools.partial(_with_sasl_deadline, account=10))
    client = _Exchange(server, "managesieve")
    try:
        client.challenge(client.start("SCRAM-SHA-256", ScramClient(ALICE, "whatever").first()))
        assert _account_entry(server, ALICE) == (0, 1)
        client.w.send(b"notastring\r\n")
        answer = client.reply()
        assert _account_entry(server, ALICE) == (1, 0)
        assert mechanisms(server) == 0
        assert answer == b'NO "cannot decode the authentication data"\r\n', answer
        failed = _lines(caplog, "login_failed")
        assert len(failed) == 1 and 'reason="SASL response is not a string"' in failed[0], failed
        client.goes_on()
    finally:
        client.w.close()


@pytest.mark.parametrize("proto", list(SILENT))
def test_a_scram_login_leaves_no_mechanism_behind(
    make_server: Callable[..., RunningServer], proto: str, mechanisms: Callable[[RunningServer], int],
) -> None:
    """After a SCRAM login the connection, still open, keeps nothing of the
    exchange: the mechanism held the account's StoredKey and ServerKey."""
    server = make_server(_with_sasl_deadline)
    client = _Exchange(server, proto)
    try:
        scram = ScramClient(ALICE, USERS[ALICE])
        server_first = client.challenge(client.start("SCRAM-SHA-256", scram.first()))
        assert client.challenge(client.answer(scram.final(server_first))) == scram.expected_v
        done = client.answer(b"")
        assert done.startswith((b"235 ", b"a OK ", b"+OK", b"OK ")), done
        assert mechanisms(server) == 0
    finally:
        client.w.close()


@pytest.mark.parametrize("how", ["LOGIN", "AUTHENTICATE PLAIN"])
def test_a_logged_in_imap_session_keeps_no_login_machinery(
    make_server: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch, how: str,
) -> None:
    """An IMAP session lives as long as its client idles; once logged in it
    has nothing left to settle, and keeps no Authenticator (its throttle
    state, timers and closures: some 0.6 KiB of every idle connection)."""
    from mailyard.net import login

    made: list[weakref.ref[login.Authenticator]] = []
    real = login.Authenticator.__init__

    def init(self: login.Authenticator, *args: object) -> None:
        real(self, *args)  # type: ignore[arg-type]
        made.append(weakref.ref(self))

    monkeypatch.setattr(login.Authenticator, "__init__", init)
    server = make_server()
    client = imaplib.IMAP4(server.host, server.port("imap"), timeout=10)
    try:
        if how == "LOGIN":
            client.login(ALICE, USERS[ALICE])
        else:
            client.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{USERS[ALICE]}".encode())
        client.select("INBOX")

        async def alive() -> int:
            gc.collect()
            return sum(ref() is not None for ref in made)

        assert made and server.call(alive()) == 0
    finally:
        client.logout()


@pytest.mark.parametrize("proto", ["smtp", "pop3", "managesieve"])
def test_an_exchange_that_expires_while_the_client_is_not_reading_is_answered_when_it_reads(
    make_server: Callable[..., RunningServer], proto: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deadline passes while the server's output waits for the client
    (the transport paused writing, as for a client that does not read): the
    failure reply is not written then, and it is when the client takes the
    output again (``resume_writing``), with no line from it."""
    from mailyard.net import session_protocol

    connections: list[session_protocol.SessionProtocol] = []
    made = session_protocol.SessionProtocol.connection_made

    def connection_made(self: session_protocol.SessionProtocol, transport: object) -> None:
        connections.append(self)
        made(self, transport)  # type: ignore[arg-type]

    monkeypatch.setattr(session_protocol.SessionProtocol, "connection_made", connection_made)
    server = make_server(_with_sasl_deadline)
    client = _Exchange(server, proto)

    async def flow(paused: bool) -> None:
        (conn,) = connections
        conn.pause_writing() if paused else conn.resume_writing()

    try:
        client.challenge(client.start("SCRAM-SHA-256", ScramClient(ALICE, "whatever").first()))
        server.call(flow(paused=True))
        assert wait_for(lambda: _account_entry(server, ALICE) == (1, 0))  # the deadline passed
        assert select.select([client.w.sock], [], [], 0)[0] == []  # nothing written meanwhile
        server.call(flow(paused=False))
        answer = client.reply()
        assert answer.startswith(SILENT[proto][1]), answer
        client.goes_on()
    finally:
        client.w.close()


# --- 7. fake SCRAM salts ---------------------------------------------------------------------


def _salt(server: RunningServer, user: str) -> bytes:
    w = Wire(server.port("imap"))
    try:
        w.line()
        reply, _ = _scram_start(w, "imap", user)
        attrs = dict(kv.split(b"=", 1) for kv in _server_first(reply).split(b","))
        w.imap("*", b"a")
        return attrs[b"s"]
    finally:
        w.close()


def test_fake_salts_are_stable_across_spellings_and_restarts(tmp_path: Path) -> None:
    cfg = make_test_config()
    limits()(cfg)
    spellings = {
        NOBODY: (NOBODY, "NOBODY@EXAMPLE.TEST", "nobody@example.test.", "Nobody@Example.Test."),
        ALICE: (ALICE, "ALICE@EXAMPLE.TEST", "alice@example.test."),
    }
    salts: dict[str, set[bytes]] = {name: set() for name in spellings}
    for run in range(2):
        server = RunningServer(tmp_path / "data", cfg, seed_defaults=run == 0)
        try:
            server.start()
            for name, names in spellings.items():
                salts[name] |= {_salt(server, spelling) for spelling in names}
            other = _salt(server, "somebody-else@example.test")
        finally:
            server.stop()
    # One salt per name, whatever the spelling and across the restart, as a
    # real account has; different names, different salts.
    assert {name: len(s) for name, s in salts.items()} == {NOBODY: 1, ALICE: 1}
    assert other not in salts[NOBODY]
    secret = tmp_path / "data" / "scram-salt.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_a_short_fake_salt_key_is_replaced(tmp_path: Path) -> None:
    """An empty or cut-short key (a crash while it was made, a truncated
    restore) is not used: anyone could compute fake salts from it and tell
    unknown users from real ones. A new one replaces it, kept from then on."""
    from mailyard.auth.service import load_secret

    for short in (b"", b"x" * 31):
        key = tmp_path / f"key-{len(short)}"
        key.write_bytes(short)
        secret = load_secret(key)
        assert len(secret) == 32 and secret != short[:32]
        assert key.read_bytes() == secret and stat.S_IMODE(key.stat().st_mode) == 0o600
        assert load_secret(key) == secret


def test_the_fake_salt_key_is_read_before_the_first_login(
    make_server: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key of the fake salts is read (or made) as the server starts, off
    its event loop: an unknown user's SCRAM exchange, the first login of the
    server, reads no file while other sessions wait."""
    from mailyard.auth import service

    server = make_server(limits())
    secret = server.data_dir / "scram-salt.key"
    assert secret.exists() and stat.S_IMODE(secret.stat().st_mode) == 0o600
    reads: list[Path] = []
    monkeypatch.setattr(service, "load_secret", lambda path: reads.append(path) or b"x" * 32)
    salt = _salt(server, NOBODY)
    assert reads == []
    # the salt comes from the key in the data folder: the same after a restart
    assert salt == base64.b64encode(hmac.digest(secret.read_bytes()[:32], NOBODY.encode(), "sha256")[:16])


# --- 8. one reply rule over the limit -------------------------------------------------------------


ALL_WAYS = ["smtp", "imap", "pop3", "apop", "web"]


def test_locked_names_get_the_temporary_reply_whatever_the_password(
    make_server: Callable[..., RunningServer], verifications: Verifications
) -> None:
    server = make_server(limits(account=3))
    for user in (ALICE, NOBODY):
        for _ in range(3):
            assert login(server, "imap", user, WRONG).startswith(WRONG_REPLY["imap"])
    before = verifications.count
    for proto in ALL_WAYS:
        right = login(server, proto, ALICE, USERS[ALICE])
        wrong = login(server, proto, ALICE, WRONG)
        unknown = login(server, proto, NOBODY, WRONG)
        print(proto, right)
        assert right == wrong == unknown, proto
        assert right.startswith(TEMPORARY[proto]), right
    assert verifications.count == before  # refused without a check
    # Bob, under his limit: a wrong password and an unknown name still get
    # the same (non-temporary) reply.
    assert login(server, "imap", BOB, WRONG) == login(server, "imap", "nobody2@example.test", WRONG)


def test_a_locked_address_gets_the_temporary_reply_whatever_the_password(
    make_server: Callable[..., RunningServer], verifications: Verifications
) -> None:
    server = make_server(limits(ip=4))
    for i in range(4):
        assert login(server, "pop3", f"guess{i}@example.test", WRONG).startswith(WRONG_REPLY["pop3"])
    before = verifications.count
    for proto in ALL_WAYS:
        right = login(server, proto, BOB, USERS[BOB])
        assert right == login(server, proto, BOB, WRONG) == login(server, proto, NOBODY, WRONG), proto
        assert right.startswith(TEMPORARY[proto]), right
    assert verifications.count == before


# --- 9. fairness ----------------------------------------------------------------------------------


def test_failures_for_bob_do_not_delay_alice_behind_the_same_address(
    make_server: Callable[..., RunningServer],
) -> None:
    """Default delays (1 s doubling to 16 s), read from the service's sleep
    hook instead of waited: nine failures for bob from 127.0.0.1, spread over
    the four protocols; then alice's right password from the same address
    waits nothing, bob's right password waits bob's delay once and resets it,
    and the address's failure count survives both successes."""

    def configure(cfg: Config) -> None:
        cfg.auth.ip_max_failures = 12

    server = make_server(configure)
    service = server.server.login  # type: ignore[union-attr]
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    service.sleep = record
    for i in range(9):
        assert login(server, PROTOCOLS[i % 4], BOB, WRONG).startswith(WRONG_REPLY[PROTOCOLS[i % 4]])
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 16.0, 16.0, 16.0]
    for proto in PROTOCOLS:
        waits.clear()
        assert login(server, proto, ALICE, USERS[ALICE]).startswith(OK_REPLY[proto])
        assert waits == [], proto  # alice is not slowed by bob's failures
    waits.clear()
    assert login(server, "imap", BOB, USERS[BOB]).startswith(OK_REPLY["imap"])
    assert waits == [16.0]  # bob's own delay, once
    waits.clear()
    assert login(server, "pop3", BOB, USERS[BOB]).startswith(OK_REPLY["pop3"])
    assert waits == []  # reset by his success from this address
    # The successes gave the address none of its budget back: three more
    # failures (9 + 3 = 12) lock it, for everybody behind it.
    for i in range(3):
        assert login(server, "smtp", f"victim{i}@example.test", WRONG).startswith(WRONG_REPLY["smtp"])
    assert login(server, "imap", ALICE, USERS[ALICE]).startswith(TEMPORARY["imap"])


def test_a_fake_salt_key_linked_to_a_shared_file_is_made_there(tmp_path: Path) -> None:
    """Nodes sharing one database link the key to a file they share; the
    first to start makes the file the link points at, the others read it:
    every node shows the same fake salts."""
    from mailyard.auth.service import load_secret

    shared = tmp_path / "shared"
    shared.mkdir()
    nodes = [tmp_path / "a", tmp_path / "b"]
    for node in nodes:
        node.mkdir()
        (node / "scram-salt.key").symlink_to(shared / "scram-salt.key")
    first, second = (load_secret(node / "scram-salt.key") for node in nodes)
    assert len(first) == 32 and first == second == (shared / "scram-salt.key").read_bytes()
