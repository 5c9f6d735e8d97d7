"""Security review items, each proved through the real interfaces.

1. No user enumeration: on the submission port an unauthenticated RCPT/VRFY
   says the same for every address; POP3 USER/PASS, APOP, AUTH, IMAP LOGIN /
   AUTHENTICATE, SMTP AUTH and the webmail login answer an unknown user and a
   wrong password with byte-identical replies, and an unknown user still costs
   one password-hash verification (counted through a spy on the hasher, so a
   future early return fails the test; no wall-clock times are asserted). On
   the MX port an unknown local recipient gets 550 5.1.1 (RFC 5321 3.3), the
   same reply for every unknown address.
2. No path escape: mailbox names, user and domain names, webmail folder and
   attachment parameters, attachment file names saved by the client and queue
   IDs never create or read a file outside the data (or chosen output)
   directory; each test looks at the file system afterwards.
3. No header injection: CR/LF (bare or encoded) in CLI options, webmail form
   fields and SMTP parameters never becomes a header field of a stored message.
4. Secrets are never logged: every login path, successful or not, at DEBUG,
   leaves no password, SASL blob or session cookie in the log output.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import pytest

from mailyard.config import Config
from tests.conftest import USERS, RunningServer
from tests.integration.test_tls_auth import ScramClient

httpx = pytest.importorskip("httpx")

ALICE = "alice@example.test"
BOB = "bob@example.test"
NOBODY = "nobody@example.test"
WRONG = "wrong-password-77"


def quick_auth(cfg: Config) -> None:
    """Failures cost (almost) no throttle delay and never lock out, so one test
    can try many wrong logins; the replies are what is being compared."""
    cfg.auth.base_delay = 0.001
    cfg.auth.max_delay = 0.002
    cfg.auth.account_max_failures = 10_000
    cfg.auth.ip_max_failures = 10_000


def b64(data: str | bytes) -> bytes:
    return base64.b64encode(data.encode() if isinstance(data, str) else data)


class Wire:
    """A line-oriented client on a real socket, for byte-exact replies."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.file = self.sock.makefile("rb")

    def line(self) -> bytes:
        data = self.file.readline()
        assert data, "connection closed"
        return data

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, text: str | bytes) -> bytes:
        """Send one line, return the next line (POP3, SASL continuations)."""
        self.send((text.encode() if isinstance(text, str) else text) + b"\r\n")
        return self.line()

    def smtp(self, text: str | bytes | None = None) -> bytes:
        """Send one line (if any) and return the whole SMTP reply."""
        if text is not None:
            self.send((text.encode() if isinstance(text, str) else text) + b"\r\n")
        out = b""
        while True:
            line = self.line()
            out += line
            if line[3:4] != b"-":
                return out

    def imap(self, text: str | bytes, tag: bytes = b"t1") -> bytes:
        """Send a tagged command; return everything up to its tagged reply."""
        self.send((text.encode() if isinstance(text, str) else text) + b"\r\n")
        return self.until(tag)

    def until(self, tag: bytes) -> bytes:
        out = b""
        while True:
            line = self.line()
            out += line
            if line.startswith(tag + b" "):
                return out

    def close(self) -> None:
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def hash_spy(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every argon2 verification the server runs, as a list of booleans: True
    when it was run against the dummy hash (unknown user), False for a real
    account's hash. Installed in-process, where the server threads run."""
    import mailyard.auth.passwords as passwords

    real = passwords._verify_hash  # one call per verification, fast path or not
    dummy = passwords._get_dummy_hash()
    calls: list[bool] = []

    def spy(stored: str, password: str) -> bool:
        calls.append(stored == dummy)
        return real(stored, password)

    monkeypatch.setattr(passwords, "_verify_hash", spy)
    return calls


@pytest.fixture
def server(make_server: Callable[..., RunningServer]) -> RunningServer:
    return make_server(quick_auth)


# --- 1. user enumeration ----------------------------------------------------------


def _submission_probe(server: RunningServer, address: str) -> list[bytes]:
    w = Wire(server.port("submission"))
    try:
        w.smtp()
        w.smtp("EHLO client.example.test")
        return [w.smtp(f"RCPT TO:<{address}>"), w.smtp(f"VRFY {address}"), w.smtp(f"VRFY <{address}>"),
                w.smtp(f"EXPN {address}"), w.smtp(f"MAIL FROM:<{address}>")]
    finally:
        w.close()


@pytest.mark.parametrize("vrfy", [False, True], ids=["vrfy-off", "vrfy-on"])
def test_submission_unauthenticated_rcpt_vrfy_do_not_enumerate(
    make_server: Callable[..., RunningServer], vrfy: bool
) -> None:
    def configure(cfg: Config) -> None:
        cfg.smtp.vrfy = vrfy
        cfg.smtp.expn = vrfy

    server = make_server(configure)
    known = _submission_probe(server, ALICE)
    unknown = _submission_probe(server, NOBODY)
    elsewhere = _submission_probe(server, "someone@elsewhere.test")
    assert known == unknown == elsewhere
    rcpt, vrfy1, vrfy2, _expn, mail = known
    assert rcpt.startswith(b"503 ") and mail.startswith(b"530 ")
    # RFC 5321 3.5.3 / 7.3: without AUTH, VRFY cannot verify anybody here.
    assert vrfy1.startswith(b"252 ") and vrfy2.startswith(b"252 ")


def test_mx_port_unknown_recipients_get_one_reply(server: RunningServer) -> None:
    w = Wire(server.port("smtp"))
    try:
        w.smtp()
        w.smtp("EHLO client.example.test")
        assert w.smtp("MAIL FROM:<sender@elsewhere.test>").startswith(b"250 ")
        replies = [w.smtp(f"RCPT TO:<{a}>") for a in (NOBODY, "Nobody.Else@example.test", "x@EXAMPLE.TEST")]
        assert w.smtp(f"RCPT TO:<{ALICE}>").startswith(b"250 ")
        # VRFY is off by default: 252 for everybody (RFC 5321 3.5.3).
        assert w.smtp(f"VRFY {ALICE}") == w.smtp(f"VRFY {NOBODY}")
    finally:
        w.close()
    # RFC 5321 3.3: 550 for an unknown local user is normal; the reply differs
    # only in the echoed address.
    shapes = {re.sub(rb"<[^>]*>", b"<ADDR>", r) for r in replies}
    assert shapes == {b"550 5.1.1 <ADDR>: no such user here\r\n"}


def _smtp_auth(server: RunningServer, mech: str, user: str, password: str) -> bytes:
    w = Wire(server.port("submission"))
    try:
        w.smtp()
        w.smtp("EHLO client.example.test")
        if mech == "PLAIN":
            return w.smtp(b"AUTH PLAIN " + b64(f"\0{user}\0{password}"))
        if mech == "LOGIN":
            assert w.smtp("AUTH LOGIN").startswith(b"334 ")
            assert w.smtp(b64(user)).startswith(b"334 ")
            return w.smtp(b64(password))
        scram = ScramClient(user, password)
        first = w.smtp(b"AUTH SCRAM-SHA-256 " + b64(scram.first()))
        assert first.startswith(b"334 ")
        server_first = base64.b64decode(first[4:].strip())
        return _scram_shape(server_first) + w.smtp(b64(scram.final(server_first)))
    finally:
        w.close()


def _scram_shape(server_first: bytes) -> bytes:
    """The server-first-message without its random nonce: salt length and
    iteration count must not differ between known and unknown users."""
    attrs = dict(kv.split(b"=", 1) for kv in server_first.split(b","))
    return b"s:%d i:%s|" % (len(base64.b64decode(attrs[b"s"])), attrs[b"i"])


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "SCRAM-SHA-256"])
def test_smtp_auth_unknown_user_equals_wrong_password(
    server: RunningServer, hash_spy: list[bool], mech: str
) -> None:
    known = _smtp_auth(server, mech, ALICE, WRONG)
    known_calls = list(hash_spy)
    hash_spy.clear()
    unknown = _smtp_auth(server, mech, NOBODY, WRONG)
    assert known == unknown
    assert b"535 5.7.8" in known
    if mech != "SCRAM-SHA-256":
        # The unknown user ran exactly one verification, against the dummy hash.
        assert known_calls == [False] and hash_spy == [True]


def _pop3_login(server: RunningServer, how: str, user: str, password: str) -> bytes:
    w = Wire(server.port("pop3"))
    try:
        greeting = w.line()
        if how == "USER":
            assert w.cmd(f"USER {user}") == b"+OK\r\n"
            return w.cmd(f"PASS {password}")
        if how == "APOP":
            stamp = re.search(rb"<[^>]+>", greeting).group(0)
            digest = hashlib.md5(stamp + password.encode()).hexdigest()
            return w.cmd(f"APOP {user} {digest}")
        if how == "PLAIN":
            return w.cmd(b"AUTH PLAIN " + b64(f"\0{user}\0{password}"))
        if how == "LOGIN":
            assert w.cmd("AUTH LOGIN").startswith(b"+ ")
            assert w.cmd(b64(user)).startswith(b"+ ")
            return w.cmd(b64(password))
        scram = ScramClient(user, password)
        first = w.cmd(b"AUTH SCRAM-SHA-256 " + b64(scram.first()))
        server_first = base64.b64decode(first[2:].strip())
        return _scram_shape(server_first) + w.cmd(b64(scram.final(server_first)))
    finally:
        w.close()


@pytest.mark.parametrize("how", ["USER", "APOP", "PLAIN", "LOGIN", "SCRAM-SHA-256"])
def test_pop3_unknown_user_equals_wrong_password(server: RunningServer, hash_spy: list[bool], how: str) -> None:
    known = _pop3_login(server, how, ALICE, WRONG)
    known_calls = list(hash_spy)
    hash_spy.clear()
    unknown = _pop3_login(server, how, NOBODY, WRONG)
    assert known == unknown
    assert known.endswith(b"-ERR [AUTH] Authentication failed\r\n")
    if how in ("USER", "PLAIN", "LOGIN"):
        assert known_calls == [False] and hash_spy == [True]


def _imap_login(server: RunningServer, how: str, user: str, password: str) -> bytes:
    w = Wire(server.port("imap"))
    try:
        w.line()
        if how == "LOGIN":
            return w.imap(f'a LOGIN "{user}" "{password}"', b"a")
        if how == "PLAIN":  # SASL-IR (RFC 4959)
            return w.imap(b"a AUTHENTICATE PLAIN " + b64(f"\0{user}\0{password}"), b"a")
        if how == "LOGIN-SASL":
            assert w.cmd("a AUTHENTICATE LOGIN").startswith(b"+ ")
            assert w.cmd(b64(user)).startswith(b"+ ")
            return w.imap(b64(password), b"a")
        scram = ScramClient(user, password)
        first = w.cmd(b"a AUTHENTICATE SCRAM-SHA-256 " + b64(scram.first()))
        server_first = base64.b64decode(first[2:].strip())
        return _scram_shape(server_first) + w.imap(b64(scram.final(server_first)), b"a")
    finally:
        w.close()


@pytest.mark.parametrize("how", ["LOGIN", "PLAIN", "LOGIN-SASL", "SCRAM-SHA-256"])
def test_imap_unknown_user_equals_wrong_password(server: RunningServer, hash_spy: list[bool], how: str) -> None:
    known = _imap_login(server, how, ALICE, WRONG)
    known_calls = list(hash_spy)
    hash_spy.clear()
    unknown = _imap_login(server, how, NOBODY, WRONG)
    assert known == unknown
    assert known.endswith(b"a NO [AUTHENTICATIONFAILED] Invalid credentials\r\n")
    if how != "SCRAM-SHA-256":
        assert known_calls == [False] and hash_spy == [True]


def _web_login(server: RunningServer, user: str, password: str) -> tuple[int, str]:
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port('http')}", timeout=30) as client:
        token = re.search(r'name="login_token" value="([^"]+)"', client.get("/login").text).group(1)
        r = client.post("/login", data={"username": user, "password": password, "login_token": token})
        # The page echoes the name typed and carries a fresh form token.
        page = r.text.replace(user, "USER")
        page = re.sub(r'name="login_token" value="[^"]+"', "TOKEN", page)
        return r.status_code, page


def test_webmail_login_unknown_user_equals_wrong_password(server: RunningServer, hash_spy: list[bool]) -> None:
    known = _web_login(server, ALICE, WRONG)
    known_calls = list(hash_spy)
    hash_spy.clear()
    unknown = _web_login(server, NOBODY, WRONG)
    assert known == unknown and known[0] == 401
    assert known_calls == [False] and hash_spy == [True]


def test_account_without_password_costs_a_verification_too(server: RunningServer, hash_spy: list[bool]) -> None:
    """postmaster@ exists with the unusable hash "!locked": the reply and the
    work are those of an unknown user, so it cannot be told apart either."""
    locked = _imap_login(server, "LOGIN", "postmaster@example.test", WRONG)
    assert hash_spy == [True]
    assert locked == _imap_login(server, "LOGIN", NOBODY, WRONG)


# --- 2. path escape ------------------------------------------------------------------


def _marker() -> str:
    return "escape-" + uuid.uuid4().hex[:12]


def _files_named(root: Path, marker: str) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if marker in name:
                found.append(Path(dirpath) / name)
    return found


def assert_nothing_escaped(marker: str, tmp_path: Path, *allowed: Path) -> None:
    """No file or directory whose name carries ``marker`` exists anywhere under
    the test's temporary tree (which holds the data directory), its parent, or
    directly in / and /tmp, except inside the ``allowed`` directories."""
    roots = {tmp_path.parent}
    found = [p for root in roots for p in _files_named(root, marker)]
    found += [p for p in (Path("/") / marker, Path("/tmp") / marker, Path("/etc") / marker) if os.path.lexists(p)]
    outside = [p for p in found if not any(p.is_relative_to(a) for a in allowed)]
    assert outside == [], outside


def _mailbox_attacks(marker: str) -> list[bytes]:
    return [
        f"../../{marker}".encode(),
        f"../{marker}".encode(),
        f"/tmp/{marker}".encode(),
        f"/{marker}".encode(),
        f"a/../../{marker}".encode(),
        f"..\\..\\{marker}".encode(),
        f"{marker}/..".encode(),
        f"{marker}\x00/../../x".encode(),
        f"&AC4ALg-/{marker}".encode(),  # ".." in modified UTF-7 (RFC 3501 5.1.3 forbids it)
        b"&AAA-" + marker.encode(),  # NUL in modified UTF-7
        marker.encode() + b"/" + b"x" * 5000,
        f".../{marker}".encode(),
    ]


def _lit(data: bytes) -> bytes:
    return b"{%d+}\r\n" % len(data) + data  # LITERAL+ (RFC 7888): no continuation


def test_imap_mailbox_names_stay_in_the_store(server: RunningServer, tmp_path: Path) -> None:
    marker = _marker()
    w = Wire(server.port("imap"))
    try:
        w.line()
        assert b"a OK" in w.imap(f'a LOGIN "{ALICE}" "{USERS[ALICE]}"', b"a")
        assert b"b OK" in w.imap('b CREATE "Work"', b"b")
        msg = b"From: a@example.test\r\nSubject: x\r\n\r\nbody\r\n"
        for name in _mailbox_attacks(marker):
            for tag, command in (
                (b"c", b"c CREATE " + _lit(name)),
                (b"d", b"d SELECT " + _lit(name)),
                (b"e", b"e APPEND " + _lit(name) + b" " + _lit(msg)),
                (b"f", b'f RENAME "Work" ' + _lit(name)),
                (b"g", b"g STATUS " + _lit(name) + b" (MESSAGES)"),
                (b"h", b"h DELETE " + _lit(name)),
            ):
                reply = w.imap(command, tag)
                assert reply.split(b"\r\n")[-2].split(b" ")[1] in (b"OK", b"NO", b"BAD"), reply
                if b".." in name.split(b"/") or name.startswith(b"/") or b"\x00" in name or b"&AC4" in name:
                    # dot-dot levels, empty levels, NUL, encoded ASCII: refused outright
                    assert reply.split(b"\r\n")[-2].split(b" ")[1] in (b"NO", b"BAD"), (name, reply)
                if tag == b"f" and b" OK " in reply:
                    assert b"i OK" in w.imap(b"i RENAME " + _lit(name) + b' "Work"', b"i")
        listing = w.imap('j LIST "" "*"', b"j")
        assert b"../" not in listing and b"/.." not in listing
    finally:
        w.close()
    assert_nothing_escaped(marker, tmp_path, server.data_dir)


def _cli(data: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailyard", "--data", str(data), *args],
                          input=stdin, capture_output=True, text=True, timeout=60)


def test_cli_names_and_queue_ids_stay_in_the_data_directory(tmp_path: Path) -> None:
    marker = _marker()
    data = tmp_path / "deep" / "data"
    assert _cli(data, "init", "--domain", "example.test").returncode == 0
    password = "a-long-password-1\n"
    # A local part may legally hold "/" and dots (RFC 5322 atext); it is a key
    # in the store, never a path.
    for address in (f"../../{marker}@example.test", f"..%2f{marker}@example.test"):
        r = _cli(data, "user", "add", address, "--password-stdin", stdin=password)
        assert r.returncode in (0, 1), r.stderr
    # Domains are LDH labels or literals: path characters are refused.
    for domain in (f"../../{marker}", f"/tmp/{marker}", f"a/../{marker}"):
        r = _cli(data, "domain", "add", domain)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        r = _cli(data, "user", "add", f"x@{domain}", "--password-stdin", stdin=password)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    for queue_id in ("../..", f"../../{marker}", f"/tmp/{marker}", "/etc/passwd"):
        r = _cli(data, "queue", "show", queue_id)
        # queue ids are integers: argparse refuses the rest before any lookup
        assert r.returncode == 2 and "invalid int value" in r.stderr, r.stderr
        assert "root:" not in r.stdout
    r = _cli(data, "queue", "show", "424242")
    assert r.returncode == 1 and "no queue entry" in r.stderr
    assert_nothing_escaped(marker, tmp_path, data)


def _web_client(server: RunningServer, user: str = ALICE) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=f"http://127.0.0.1:{server.port('http')}", follow_redirects=False, timeout=30)
    token = re.search(r'name="login_token" value="([^"]+)"', client.get("/login").text).group(1)
    r = client.post("/login", data={"username": user, "password": USERS[user], "login_token": token})
    assert r.status_code == 303, r.text
    csrf = re.search(r'data-csrf="([^"]+)"', client.get("/", follow_redirects=True).text).group(1)
    return client, csrf


def _box_id(server: RunningServer, user: str, name: str) -> int:
    async def go() -> int:
        account = await server.store.get_account(user)
        return (await server.store.get_mailbox(account.id, name)).id

    return server.call(go())


def test_webmail_folder_and_part_parameters_stay_in_the_store(server: RunningServer, tmp_path: Path) -> None:
    marker = _marker()
    client, csrf = _web_client(server)
    try:
        for name in (f"../../{marker}", f"/tmp/{marker}", f"a/../../{marker}", f"{marker}\x00x"):
            r = client.post("/folders", data={"csrf": csrf, "action": "create", "name": name})
            assert r.status_code == 400, (name, r.status_code)
        inbox = _box_id(server, ALICE, "INBOX")
        r = client.post("/folders", data={"csrf": csrf, "action": "create", "name": marker})
        assert r.status_code == 303
        box = _box_id(server, ALICE, marker)
        r = client.post("/folders", data={"csrf": csrf, "action": "rename", "box": str(box), "name": f"../{marker}"})
        assert r.status_code == 400
        r = client.post("/folders", data={"csrf": csrf, "action": "create", "parent": "../..", "name": marker})
        assert r.status_code == 404
        # an uploaded attachment's name keeps no path (web/render.py safe_filename)
        r = client.post("/compose", data={"csrf": csrf, "to": BOB, "subject": "files", "body": "x",
                                          "action": "send"},
                        files={"attachment": (f"../../{marker}", b"payload", "application/octet-stream")})
        assert r.status_code == 303, r.text
        (received,) = server.messages(BOB)
        (att,) = message_from_bytes(received, policy=default_policy).iter_attachments()
        assert att.get_filename() == marker
        # part specs and ids that try to walk: not found, nothing read from disk
        for path in (f"/box/{inbox}/msg/1/part/..", f"/box/{inbox}/msg/1/part/..%2F..%2Fetc%2Fpasswd",
                     "/box/..%2F..%2Fetc/msg/1/raw", f"/box/{inbox}/msg/..%2F1/raw", "/static/..%2F..%2Fetc%2Fpasswd",
                     "/../../etc/passwd"):
            r = client.get(path)
            assert r.status_code in (400, 404), (path, r.status_code)
            assert b"root:" not in r.content
    finally:
        client.close()
    assert_nothing_escaped(marker, tmp_path, server.data_dir)


def test_client_save_attachments_stays_in_the_output_directory(
    mailserver: RunningServer, tmp_path: Path
) -> None:
    from tests.integration.test_client import MailCLI, server_ports

    marker = _marker()
    names = [f"../../{marker}-a", f"/tmp/{marker}-b", f"..\\..\\{marker}-c", "..", f"{marker}-d/../../x",
             f"{marker}-link"]
    # Raw MIME with hostile file names (a stranger's message, not our compose()).
    parts = b"".join(
        b"--b\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="' + n.encode().replace(b"\\", b"\\\\") + b'"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"data %d" % i) + b"\r\n"
        for i, n in enumerate(names)
    )
    raw = (b"From: Mallory <mallory@elsewhere.test>\r\nTo: " + BOB.encode() + b"\r\nSubject: files\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n")

    async def put() -> None:
        account = await mailserver.store.get_account(BOB)
        box = await mailserver.store.get_mailbox(account.id, "INBOX")
        await mailserver.store.append(box, raw, [])

    mailserver.call(put())
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / f"{marker}-victim"
    (out / f"{marker}-link").symlink_to(victim)  # a planted link named like an attachment
    mail = MailCLI(tmp_path / "client-home")
    mail.add_account("bob", BOB, USERS[BOB], **server_ports(mailserver))
    res = mail("read", "1", "--save-attachments", str(out), account="bob")
    saved = sorted(p.name for p in out.iterdir() if not p.is_symlink())
    assert len(saved) == len(names), (saved, res.out)
    assert not os.path.lexists(victim)
    assert_nothing_escaped(marker, tmp_path, out)


# --- 3. header injection -------------------------------------------------------------

INJECT = "X-Injected: yes"
BREAKS = ["\r\n", "\n", "\r"]


def _headers(raw: bytes) -> list[str]:
    """The header field names of a stored message, top level and every part."""
    msg = message_from_bytes(raw, policy=default_policy)
    return [name.lower() for part in msg.walk() for name in part.keys()]


def _assert_clean(raw: bytes) -> None:
    names = _headers(raw)
    assert "x-injected" not in names, raw[:600]
    header = raw.split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"^X-Injected", header, re.MULTILINE | re.IGNORECASE), header
    assert names.count("received") <= 1 and names.count("return-path") <= 1


def test_cli_send_refuses_line_breaks_in_header_fields(mailserver: RunningServer, tmp_path: Path) -> None:
    from tests.integration.test_client import MailCLI, server_ports

    mail = MailCLI(tmp_path / "client-home")
    ports = server_ports(mailserver)
    mail.add_account("alice", ALICE, USERS[ALICE], **ports)
    for value in (f"hi\r\n{INJECT}", f"hi\r{INJECT}"):
        res = mail("send", "--to", BOB, "--subject", value, "--body", "b", "--no-save", account="alice", check=False)
        assert res.returncode != 0 and "Traceback" not in res.err, (value, res.out, res.err)  # compose() refuses
    res = mail("send", "--to", f"Bob\n{INJECT} <{BOB}>", "--cc", f"{BOB}\r\n{INJECT}", "--subject", "s",
               "--body", "b", "--no-save", account="alice", check=False)
    assert "Traceback" not in res.err, res.err
    # A display name with a line break (set in the account) cannot inject
    # either; the literal text "%0d%0a" is just text in a subject.
    mail.add_account("eve", ALICE, USERS[ALICE], display_name=f"Eve\r\n{INJECT}", **ports)
    res = mail("send", "--to", BOB, "--subject", f"hi%0d%0a{INJECT}", "--body", "b", "--no-save", account="eve",
               check=False)
    assert "Traceback" not in res.err, res.err
    mail("send", "--to", BOB, "--subject", f"hi%0d%0a{INJECT}", "--body", "b", "--no-save", account="alice")
    stored = mailserver.messages(BOB)
    assert stored  # whatever was sent (line breaks folded away, or refused), none is injected
    for raw in stored:
        _assert_clean(raw)
    assert message_from_bytes(stored[-1], policy=default_policy)["Subject"] == f"hi%0d%0a{INJECT}"


def test_webmail_compose_fields_cannot_inject_headers(server: RunningServer) -> None:
    client, csrf = _web_client(server)
    try:
        base = {"csrf": csrf, "to": BOB, "cc": "", "bcc": "", "subject": "s", "body": "b", "action": "send"}
        for field in ("subject", "to", "cc", "bcc"):
            for br in BREAKS:
                value = f"hi{br}{INJECT}" if field == "subject" else f"{BOB}{br}{INJECT}"
                r = client.post("/compose", data={**base, field: value})
                assert r.status_code in (303, 400), (field, r.status_code)
        # a hand-made form body: %0d%0a decodes to a real CR LF in the field
        raw_form = f"csrf={csrf}&to={BOB}&subject=hi%0d%0a{INJECT.replace(' ', '+')}&body=b&action=send"
        r = client.post("/compose", content=raw_form.encode(),
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code in (303, 400)
        # an attachment file name with a line break in the multipart upload
        r = client.post("/compose", data=base,
                        files={"attachment": (f"a.txt\r\n{INJECT}", b"payload", "text/plain\r\nX-Injected: yes")})
        assert r.status_code in (303, 400)
        # the literal text %0d%0a, typed into the subject, stays text
        r = client.post("/compose", data={**base, "subject": f"literal %0d%0a{INJECT}"})
        assert r.status_code == 303
    finally:
        client.close()
    stored = server.messages(BOB) + server.messages(ALICE, "Sent")
    assert stored
    for raw in stored:
        _assert_clean(raw)
    subjects = [message_from_bytes(m, policy=default_policy)["Subject"] for m in server.messages(BOB)]
    assert f"literal %0d%0a{INJECT}" in subjects


def test_smtp_parameters_and_helo_cannot_inject_headers(server: RunningServer) -> None:
    w = Wire(server.port("smtp"))
    try:
        w.smtp()
        # Control characters in a command are refused outright (bare CR, bare LF, NUL).
        for bad in (b"EHLO evil\rX-Injected: yes", b"EHLO evil\nX-Injected: yes", b"EHLO evil\x00x"):
            assert w.smtp(bad).startswith(b"500 ")
        # A name full of comment and header syntax is kept inside one Received field.
        assert w.smtp("EHLO evil)(X-Injected:yes;").startswith(b"250")
        for line in (
            "MAIL FROM:<x@elsewhere.test> ENVID=a+0D+0AX-Injected:+20yes",
            "MAIL FROM:<x@elsewhere.test> ENVID=a+0AX-Injected:+20yes",
            "MAIL FROM:<x@elsewhere.test> RET=FULL+0D+0AX-Injected:+20yes",
        ):
            assert w.smtp(line).startswith(b"501 "), line
        assert w.smtp("MAIL FROM:<x@elsewhere.test> ENVID=ok+2Bid RET=HDRS").startswith(b"250 ")
        assert w.smtp(f"RCPT TO:<{BOB}> ORCPT=rfc822;bob+0D+0AX-Injected:+20yes").startswith(b"501 ")
        assert w.smtp(f"RCPT TO:<{BOB}> NOTIFY=FAILURE ORCPT=rfc822;{BOB}").startswith(b"250 ")
        assert w.smtp("DATA").startswith(b"354")
        assert w.smtp(b"Subject: fine\r\n\r\nbody\r\n.").startswith(b"250 ")
    finally:
        w.close()
    (raw,) = server.messages(BOB)
    _assert_clean(raw)
    received = message_from_bytes(raw, policy=default_policy).get_all("Received")
    assert len(received) == 1 and "evil" in str(received[0])


def test_submission_auth_parameter_cannot_inject(server: RunningServer) -> None:
    w = Wire(server.port("submission"))
    try:
        w.smtp()
        w.smtp("EHLO client.example.test")
        assert w.smtp(b"AUTH PLAIN " + b64(f"\0{ALICE}\0{USERS[ALICE]}")).startswith(b"235 ")
        bad = f"MAIL FROM:<{ALICE}> AUTH=x+0D+0AX-Injected:+20yes"
        assert w.smtp(bad).startswith(b"501 ")
        assert w.smtp(f"MAIL FROM:<{ALICE}> AUTH=<>").startswith(b"250 ")
        assert w.smtp(f"RCPT TO:<{BOB}>").startswith(b"250 ")
        assert w.smtp("DATA").startswith(b"354")
        assert w.smtp(f"From: {ALICE}\r\nTo: {BOB}\r\nSubject: ok\r\n\r\nbody\r\n.".encode()).startswith(b"250 ")
    finally:
        w.close()
    (raw,) = server.messages(BOB)
    _assert_clean(raw)


def test_imap_id_and_flags_cannot_forge_log_lines(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """IMAP strings may carry CR LF inside a literal; nothing the client sends
    may start a new line in the server's log (a forged log entry)."""
    caplog.set_level(logging.DEBUG)
    forged = b"\r\n2026-01-01 00:00:00 INFO mailyard.auth: imap login user=admin@example.test"
    w = Wire(server.port("imap"))
    try:
        w.line()
        w.imap(b'a ID ("name" ' + _lit(b"x" + forged) + b' "version" "1")', b"a")
        w.imap(f'b LOGIN "{ALICE}" "{USERS[ALICE]}"', b"b")
        w.imap(b"c SELECT INBOX", b"c")
        w.imap(b"d APPEND INBOX (\\Seen $Forged) " + _lit(b"Subject: x\r\n\r\nbody\r\n"), b"d")
        w.imap(b"e APPEND " + _lit(b"no" + forged) + b" " + _lit(b"Subject: x\r\n\r\nbody\r\n"), b"e")
        w.imap(b"f CREATE " + _lit(b"x" + forged), b"f")
        w.imap(b"g STORE 1 +FLAGS (" + b"$x" * 3 + b")", b"g")
        w.imap(b"h LOGOUT", b"h")
    finally:
        w.close()
    for record in caplog.records:
        text = record.getMessage()
        assert "\n" not in text and "\r" not in text, text
        assert "admin@example.test" not in text, text


# --- 4. secrets never logged ---------------------------------------------------------


def _scram_exchange(w: Wire, start: bytes, cont: bytes, user: str, password: str, reply: Callable[[], bytes]) -> list[bytes]:
    """Run SCRAM-SHA-256 on ``w``: ``start`` + initial response, continuation
    prefix ``cont`` ("334 " or "+ "); returns what the client sent (secrets)."""
    scram = ScramClient(user, password)
    first = b64(scram.first())
    w.send(start + first + b"\r\n")
    line = w.line()
    server_first = base64.b64decode(line[len(cont):].strip())
    final = b64(scram.final(server_first))
    w.send(final + b"\r\n")
    line = reply()
    if line.startswith(cont):  # server-final (v=...) as a last challenge: answer empty
        w.send(b"\r\n")
        reply()
    return [first, final, scram.final(server_first).rsplit(b",p=", 1)[1]]


def test_no_secret_in_the_logs(server: RunningServer, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("mailyard").setLevel(logging.DEBUG)
    secrets: list[bytes] = [USERS[ALICE].encode(), WRONG.encode(), ("apop-" + USERS[ALICE]).encode()]
    for password in (USERS[ALICE], WRONG):
        for user in (ALICE, NOBODY):
            plain = b64(f"\0{user}\0{password}")
            secrets += [plain, b64(password)]
            # SMTP AUTH PLAIN / LOGIN / SCRAM on submission
            w = Wire(server.port("submission"))
            w.smtp()
            w.smtp("EHLO client.example.test")
            w.smtp(b"AUTH PLAIN " + plain)
            w.close()
            w = Wire(server.port("submission"))
            w.smtp()
            w.smtp("EHLO client.example.test")
            w.smtp("AUTH LOGIN")
            w.smtp(b64(user))
            w.smtp(b64(password))
            w.close()
            w = Wire(server.port("submission"))
            w.smtp()
            w.smtp("EHLO client.example.test")
            secrets += _scram_exchange(w, b"AUTH SCRAM-SHA-256 ", b"334 ", user, password, w.smtp)
            w.close()
            # IMAP LOGIN / AUTHENTICATE PLAIN (SASL-IR) / LOGIN / SCRAM
            for command in (f'a LOGIN "{user}" "{password}"'.encode(), b"a AUTHENTICATE PLAIN " + plain):
                w = Wire(server.port("imap"))
                w.line()
                w.imap(command, b"a")
                w.close()
            w = Wire(server.port("imap"))
            w.line()
            w.cmd("a AUTHENTICATE LOGIN")
            w.cmd(b64(user))
            w.imap(b64(password), b"a")
            w.close()
            w = Wire(server.port("imap"))
            w.line()
            secrets += _scram_exchange(w, b"a AUTHENTICATE SCRAM-SHA-256 ", b"+ ", user, password,
                                       lambda w=w: w.line() if False else _imap_next(w))
            w.close()
            # POP3 USER/PASS, APOP, AUTH PLAIN / LOGIN / SCRAM
            for how in ("USER", "APOP", "PLAIN", "LOGIN"):
                _pop3_login(server, how, user, password)
            w = Wire(server.port("pop3"))
            w.line()
            secrets += _scram_exchange(w, b"AUTH SCRAM-SHA-256 ", b"+ ", user, password, w.line)
            w.close()
            # webmail
            with httpx.Client(base_url=f"http://127.0.0.1:{server.port('http')}", timeout=30) as client:
                token = re.search(r'name="login_token" value="([^"]+)"', client.get("/login").text).group(1)
                secrets.append(token.encode())
                r = client.post("/login", data={"username": user, "password": password, "login_token": token})
                for value in client.cookies.values():
                    secrets.append(value.encode())
                if r.status_code == 303:
                    client.get("/", follow_redirects=True)
    # malformed SASL data must not be echoed into the log either
    w = Wire(server.port("submission"))
    w.smtp()
    w.smtp("EHLO client.example.test")
    w.smtp(f"AUTH PLAIN !{USERS[ALICE]}!")
    w.close()
    # the admin command: a password given on stdin is never printed
    data = tmp_path / "cli-data"
    assert _cli(data, "init", "--domain", "example.test").returncode == 0
    r = _cli(data, "user", "add", "carol@example.test", "--password-stdin", stdin="carol-secret-4242\n")
    assert r.returncode == 0 and "carol-secret-4242" not in r.stdout + r.stderr

    # The server's records (the test's own HTTP client, httpx/httpcore, logs
    # the cookies it receives at DEBUG: that is the client side, not ours).
    records = [rec for rec in caplog.records if not rec.name.startswith(("httpx", "httpcore"))]
    assert any(rec.name.startswith("mailyard") for rec in records)  # logging was on
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logged = b"\n".join(
        handler.format(rec).encode("utf-8", "replace") + repr(rec.args).encode() for rec in records
    )
    secrets = [s for s in secrets if len(s) >= 8]
    leaked = [s for s in secrets if s in logged]
    assert leaked == [], leaked


def _imap_next(w: Wire) -> bytes:
    """The next IMAP line that is a continuation or the tagged reply of "a"."""
    while True:
        line = w.line()
        if line.startswith((b"+ ", b"a ")):
            return line


def test_webmail_download_names_cannot_inject_response_headers(server: RunningServer) -> None:
    """An attachment name from a stranger's message (RFC 2231 encoded CR LF)
    ends up in Content-Disposition only, as one header (RFC 6266)."""
    raw = (b"From: m@elsewhere.test\r\nTo: " + ALICE.encode() + b"\r\nSubject: f\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
           b"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment;"
           b" filename*=utf-8''a%0D%0ASet-Cookie%3A%20x%3D1%0D%0AX-Injected%3A%20yes.bin\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nZGF0YQ==\r\n--b--\r\n")

    async def put() -> int:
        account = await server.store.get_account(ALICE)
        box = await server.store.get_mailbox(account.id, "INBOX")
        return await server.store.append(box, raw, [])

    uid = server.call(put())
    inbox = _box_id(server, ALICE, "INBOX")
    client, _csrf = _web_client(server)
    try:
        page = client.get(f"/box/{inbox}/msg/{uid}").text
        spec = re.search(r'data-spec="([^"]+)"', page).group(1)
        r = client.get(f"/box/{inbox}/msg/{uid}/part/{spec}")
        assert r.status_code == 200 and r.content == b"data"
        names = [k.lower() for k, _ in r.headers.multi_items()]
        assert "x-injected" not in names and "set-cookie" not in names
        assert names.count("content-disposition") == 1
        assert "\r" not in r.headers["content-disposition"] and "\n" not in r.headers["content-disposition"]
    finally:
        client.close()


def test_forwarding_a_message_keeps_its_encoded_line_breaks_encoded(server: RunningServer) -> None:
    """A stranger's Subject with an RFC 2047 encoded CR LF, long enough that
    the stdlib re-folds it: forwarded from webmail (message/rfc822) and
    downloaded as a part, it stays one header field (CVE-2024-6923)."""
    subject = (b"=?utf-8?q?a_long_subject_line_that_needs_folding_when_written_again_by_the_stdlib=0D=0A"
               b"X-Injected:_yes?= and some more words")
    raw = (b"From: m@elsewhere.test\r\nTo: " + ALICE.encode() + b"\r\nSubject: " + subject
           + b"\r\nMessage-ID: <fwd-test@elsewhere.test>\r\n\r\nbody\r\n")

    async def put() -> int:
        account = await server.store.get_account(ALICE)
        box = await server.store.get_mailbox(account.id, "INBOX")
        return await server.store.append(box, raw, [])

    uid = server.call(put())
    inbox = _box_id(server, ALICE, "INBOX")
    client, csrf = _web_client(server)
    try:
        r = client.post("/compose", data={"csrf": csrf, "to": BOB, "subject": "Fwd: x", "body": "see",
                                          "forward": f"{inbox}:{uid}", "action": "send"})
        assert r.status_code == 303, r.text
        (received,) = server.messages(BOB)
        _assert_clean(received)
        assert not re.search(rb"^X-Injected", received, re.MULTILINE)
        sent = server.messages(ALICE, "Sent")[0]
        sent_box = _box_id(server, ALICE, "Sent")
        page = client.get(f"/box/{sent_box}/msg/1").text
        spec = re.search(r'data-spec="([^"]+)"', page).group(1)
        part = client.get(f"/box/{sent_box}/msg/1/part/{spec}")
        assert part.status_code == 200 and b"fwd-test@elsewhere.test" in part.content
        assert not re.search(rb"^X-Injected", part.content, re.MULTILINE)
        assert not re.search(rb"^X-Injected", sent, re.MULTILINE)
    finally:
        client.close()
