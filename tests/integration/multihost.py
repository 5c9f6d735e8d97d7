"""Multi-host test harness: several mailyard instances, each its own domain on
its own loopback address, and a small authoritative DNS server on loopback
that serves their MX, A and TXT records (DESIGN.md "Tests").

Ports: MX delivery always goes to one port (RFC 5321: 25). Rather than binding
privileged port 25, every instance listens for SMTP on one shared free port P
on its own address (127.0.0.2:P, 127.0.0.3:P, ...) and every instance's
``[delivery] smtp_port`` is P; that is exactly the production situation with
25 replaced by P. The other listeners (IMAP, submission) use free ports.

    hosts = MultiHost(tmp_path)
    a = hosts.add("a.test", "127.0.0.2", {"alice": "pw"})
    b = hosts.add("b.test", "127.0.0.3", {"bob": "pw"})
    ...
    hosts.stop()
"""

from __future__ import annotations

import imaplib
import select
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from mailyard.auth.passwords import Credentials
from mailyard.config import Config
from mailyard.mailauth import keys
from tests.conftest import RunningServer, make_test_config
from tests.ports import free_port
from tests.waiting import wait_until

DNS_HOST = "127.0.0.1"


class DNSServer:
    """An authoritative DNS server on loopback (UDP and TCP) built on dnspython.

    ``add(name, rdtype, rdata)`` adds records; a name that has no record of any
    type answers NXDOMAIN; a name with other types NOERROR/NODATA. Names in
    ``servfail`` answer SERVFAIL (a temporary DNS failure).
    """

    def __init__(self, host: str = DNS_HOST) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        self.servfail: set[str] = set()
        # AD ("authentic data", RFC 4035 3.2.3) in every answer: the server
        # then plays a DNSSEC-validating resolver (DANE tests).
        self.ad = False
        self.ttl = 60  # of every answer; 0 keeps resolvers from caching (records a test changes)
        self.queries: list[tuple[str, str]] = []
        for _ in range(100):  # one port number free for both UDP and TCP
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind((host, 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind((host, self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        self.tcp.listen(16)
        self.address = f"{host}:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)
        self._thread.start()

    @staticmethod
    def _key(name: str) -> str:
        return name.lower().rstrip(".") + "."

    def add(self, name: str, rdtype: str, rdata: str) -> None:
        self.records.setdefault((self._key(name), rdtype.upper()), []).append(rdata)

    def publish_dkim(self, data_dir: Path, domain: str, *, activate: bool = False) -> keys.SigningKeys:
        """A new generation of ``domain``'s DKIM keys in ``data_dir``
        (``mailyard dkim rotate``'s work), its key records published here."""
        keys.generate(data_dir, domain, activate=activate)
        loaded = keys.load(data_dir, domain)
        assert loaded is not None
        self.publish_key_records(loaded)
        return loaded

    def publish_key_records(self, signing: keys.SigningKeys) -> None:
        """The TXT records of ``signing``'s selectors (RFC 6376 3.6.2.1, RFC 8463 4)."""
        for rec in keys.records(signing):
            self.add(rec.name, "TXT", keys.txt_zone_value(rec.text))

    def remove(self, name: str, rdtype: str | None = None) -> None:
        for key in list(self.records):
            if key[0] == self._key(name) and (rdtype is None or key[1] == rdtype.upper()):
                del self.records[key]

    def answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if self.ad:
            response.flags |= dns.flags.AD
        for question in query.question:
            name = question.name.to_text().lower()
            rdtype = dns.rdatatype.to_text(question.rdtype)
            self.queries.append((name, rdtype))
            if name in self.servfail:
                response.set_rcode(dns.rcode.SERVFAIL)
                continue
            rdatas = self.records.get((name, rdtype))
            if rdatas:
                response.answer.append(dns.rrset.from_text_list(question.name, self.ttl, "IN", rdtype, rdatas))
            elif not any(key[0] == name for key in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.udp, self.tcp], [], [], 0.2)
            for sock in ready:
                try:
                    if sock is self.udp:
                        wire, peer = self.udp.recvfrom(65535)
                        self.udp.sendto(self.answer(wire), peer)
                    else:
                        conn, _ = self.tcp.accept()
                        with conn:
                            conn.settimeout(2)
                            size = int.from_bytes(_recv_exact(conn, 2), "big")
                            out = self.answer(_recv_exact(conn, size))
                            conn.sendall(len(out).to_bytes(2, "big") + out)
                except Exception:  # noqa: BLE001 - a test DNS server keeps serving
                    continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.udp.close()
        self.tcp.close()


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("short read")
        data += chunk
    return data


def shared_port(addresses: list[str]) -> int:
    """A port that is free on every one of ``addresses``."""
    return free_port(*addresses)


class ScriptedSMTP:
    """A minimal SMTP server with scripted answers, for the receiving-side
    behaviours a real mailyard does not produce on demand (a 451 at the end of
    DATA, AUTH on a smarthost). Counts connections and records transactions."""

    def __init__(self, host: str, port: int, *, data_replies: list[str] | None = None,
                 auth: tuple[str, str] | None = None, extensions: tuple[str, ...] = ("PIPELINING", "8BITMIME")) -> None:
        self.data_replies = list(data_replies or [])
        self.auth = auth
        self.extensions = extensions
        self.connections = 0
        self.transactions: list[dict] = []
        self.auth_seen: list[str] = []
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:  # noqa: C901 - a small script
                outer.connections += 1
                w = self.wfile
                w.write(b"220 scripted ESMTP\r\n")
                tx: dict = {}
                authed = outer.auth is None
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    cmd = line.decode("utf-8", "replace").strip()
                    verb = cmd[:4].upper()
                    if verb == "EHLO":
                        exts = list(outer.extensions) + (["AUTH PLAIN LOGIN"] if outer.auth else [])
                        lines = ["scripted"] + exts
                        w.write("".join(f"250{'-' if i < len(lines) - 1 else ' '}{t}\r\n"
                                        for i, t in enumerate(lines)).encode())
                    elif verb == "AUTH":
                        outer.auth_seen.append(cmd)
                        import base64
                        token = cmd.split()[2] if len(cmd.split()) > 2 else ""
                        user, pw = outer.auth or ("", "")
                        ok = base64.b64decode(token) == b"\0" + user.encode() + b"\0" + pw.encode()
                        authed = ok
                        w.write(b"235 2.7.0 ok\r\n" if ok else b"535 5.7.8 bad\r\n")
                    elif verb == "MAIL":
                        if not authed:
                            w.write(b"530 5.7.0 auth first\r\n")
                            continue
                        tx = {"mail": cmd, "rcpts": []}
                        w.write(b"250 2.1.0 ok\r\n")
                    elif verb == "RCPT":
                        tx.setdefault("rcpts", []).append(cmd)
                        w.write(b"250 2.1.5 ok\r\n")
                    elif verb == "DATA":
                        w.write(b"354 go\r\n")
                        w.flush()
                        data = b""
                        while True:
                            chunk = self.rfile.readline()
                            if chunk in (b".\r\n", b""):
                                break
                            data += chunk[1:] if chunk.startswith(b".") else chunk  # RFC 5321 4.5.2
                        tx["data"] = data
                        reply = outer.data_replies.pop(0) if outer.data_replies else "250 2.0.0 accepted"
                        tx["reply"] = reply
                        outer.transactions.append(tx)
                        w.write(reply.encode() + b"\r\n")
                    elif verb == "RSET":
                        tx = {}
                        w.write(b"250 ok\r\n")
                    elif verb == "QUIT":
                        w.write(b"221 bye\r\n")
                        return
                    else:
                        w.write(b"502 5.5.1 no\r\n")
                    w.flush()

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer((host, port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# Loopback addresses the harness may hand out (Postfix interop uses .9).
ADDRESSES = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.9"]


class MultiHost:
    def __init__(self, tmp_path: Path, store: Callable[[Config], None] | None = None) -> None:
        """``store``: points each instance's ``[store]`` at the test's backend
        (conftest ``use_store_backend``); SQLite in the data directory without it."""
        self.tmp_path = tmp_path
        self.store = store
        self._seeded: set[str] = set()  # instances whose store has its domain and users
        self.dns = DNSServer()
        self.smtp_port = shared_port(ADDRESSES)
        self.servers: dict[str, RunningServer] = {}
        self.passwords: dict[str, str] = {}
        self.scripted: list[ScriptedSMTP] = []

    def add_scripted(self, domain: str, ip: str, **kwargs: object) -> ScriptedSMTP:
        """A scripted SMTP server as ``domain``'s MX on ``ip`` (the shared SMTP port)."""
        server = ScriptedSMTP(ip, self.smtp_port, **kwargs)  # type: ignore[arg-type]
        self.scripted.append(server)
        self.dns.add(domain, "MX", f"10 mx.{domain}.")
        self.dns.add(f"mx.{domain}", "A", ip)
        return server

    def delivery_config(self, cfg: Config) -> None:
        """Point outbound delivery at the test DNS and port, with a fast schedule."""
        d = cfg.delivery
        d.smtp_port = self.smtp_port
        d.nameservers = self.dns.address
        d.dns_timeout = 3.0
        d.retry_initial = 0.3
        d.retry_factor = 1.5
        d.retry_max_interval = 1.0
        d.max_lifetime = 3600.0
        d.delay_warning = 0.0
        d.poll_interval = 0.2
        d.connect_timeout = 3.0

    def add(
        self,
        domain: str,
        ip: str,
        users: dict[str, str],
        *,
        configure: Callable[[Config], None] | None = None,
        mx: bool = True,
        start: bool = True,
    ) -> RunningServer:
        """Start an instance for ``domain`` on ``ip`` with ``users`` (local part -> password)."""
        cfg = make_test_config()
        cfg.server.hostname = f"mx.{domain}"
        cfg.server.bind = ip
        cfg.store.fsync = False
        if self.store is not None:
            self.store(cfg)
        for name in ("smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s", "http", "https", "managesieve"):
            setattr(cfg.ports, name, 0)
        cfg.ports.smtp = self.smtp_port
        cfg.ports.imap = free_port(ip)
        cfg.ports.submission = free_port(ip)
        self.delivery_config(cfg)
        cfg.delivery.source_address = ip  # connections come from the instance's own address
        if configure is not None:
            configure(cfg)
        if mx:
            self.dns.add(domain, "MX", f"10 mx.{domain}.")
            self.dns.add(f"mx.{domain}", "A", ip)
            self.dns.add(domain, "TXT", f'"v=spf1 ip4:{ip} -all"')
        rs = RunningServer(self.tmp_path / domain, cfg, ephemeral_ports=False, seed_defaults=False)
        self.servers[domain] = rs

        async def seed(store) -> None:  # noqa: ANN001
            await store.add_domain(domain)
            await store.add_account(f"postmaster@{domain}", "!locked")
            for local, password in users.items():
                creds = Credentials.from_password(password)
                await store.add_account(f"{local}@{domain}", creds.password_hash, scram_sha256=creds.scram_sha256)
                self.passwords[f"{local}@{domain}"] = password

        self._seeds = getattr(self, "_seeds", {})
        self._seeds[domain] = seed
        if start:
            rs.start(seed)
            self._seeded.add(domain)
        return rs

    def restart(self, domain: str) -> RunningServer:
        """Start a stopped instance again on the same data directory."""
        old = self.servers[domain]
        rs = RunningServer(old.data_dir, old.config, ephemeral_ports=False, seed_defaults=False)
        self.servers[domain] = rs
        first = domain not in self._seeded
        rs.start(self._seeds[domain] if first else None)
        self._seeded.add(domain)
        return rs

    def imap_messages(self, address: str, mailbox: str = "INBOX") -> list[bytes]:
        """Every message in a mailbox, fetched over IMAP from the user's own server."""
        domain = address.rpartition("@")[2]
        rs = self.servers[domain]
        imap = imaplib.IMAP4(rs.host, rs.config.ports.imap, timeout=10)
        try:
            imap.login(address, self.passwords[address])
            imap.select(mailbox)
            typ, data = imap.uid("SEARCH", None, "ALL")
            uids = data[0].split()
            out = []
            for uid in uids:
                typ, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
                out.append(fetched[0][1])
            imap.logout()
            return out
        finally:
            try:
                imap.shutdown()
            except OSError:
                pass

    def wait_for(self, predicate: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
        """Poll ``predicate`` until it returns something true (no fixed sleeps)."""
        return wait_until(predicate, timeout, what)

    def wait_messages(self, address: str, count: int = 1, timeout: float = 30.0) -> list[bytes]:
        domain = address.rpartition("@")[2]
        rs = self.servers[domain]
        self.wait_for(lambda: len(rs.messages(address)) >= count, timeout, f"{count} message(s) for {address}")
        return self.imap_messages(address)

    def queue(self, domain: str) -> list:
        rs = self.servers[domain]
        return rs.call(rs.store.queue_list())

    def stop(self) -> None:
        for rs in self.servers.values():
            if rs.server is not None or rs.loop.is_running():
                try:
                    rs.stop()
                except Exception:  # noqa: BLE001 - stop the others anyway
                    pass
        for scripted in self.scripted:
            scripted.stop()
        self.dns.stop()


@pytest.fixture
def multihost(tmp_path: Path) -> Iterator[MultiHost]:
    hosts = MultiHost(tmp_path)
    try:
        yield hosts
    finally:
        hosts.stop()
