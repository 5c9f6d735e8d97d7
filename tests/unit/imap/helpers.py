"""Drive the real IMAP layer (protocols/imap/session.py) over the in-memory
backend (protocols/imap/memory.py), byte for byte, without sockets.

    c = connect(store)                      # greeted and logged in as alice
    c.expect("a1 NOOP", "a1 OK NOOP completed")
    c.expect("a2 SELECT INBOX", "* 3 EXISTS", ..., "a2 OK [READ-WRITE] SELECT completed")
    lines = c.untagged("a3 FETCH 1:* (FLAGS)")   # the untagged lines; the command must end OK

Expected lines are written without CRLF; a literal is part of its line
(``'* 1 FETCH (BODY[] {5}\\r\\nhello)'``).
"""

from __future__ import annotations

from mailyard.protocols.imap.memory import Conversation, MemoryStore

USER = "alice"
PASSWORD = "secret"

PLAIN = (
    b"Date: Wed, 17 Jul 1996 02:23:25 -0700\r\n"
    b"From: Terry Gray <gray@cac.washington.edu>\r\n"
    b"Subject: IMAP4rev2 WG mtg summary\r\n"
    b"To: imap@cac.washington.edu\r\n"
    b"Message-Id: <B27397-0100000@cac.washington.edu>\r\n"
    b"\r\n"
    b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
)
MULTIPART = (
    b"From: Jorg <j@x.example>\r\n"
    b"Subject: parts\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Gr=C3=BC=C3=9Fe\r\n"
    b"--b1\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAwQ=\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Transfer-Encoding: x-uuencode\r\n"
    b"\r\n"
    b"begin 644 x\r\n"
    b"--b1--\r\n"
)
SHORT = b"From: bob@example.test\r\nSubject: short\r\n\r\nhi\r\n"


def store_with_mail(*messages: bytes, seen_first: bool = True) -> MemoryStore:
    """A store with alice's account; ``messages`` (default PLAIN, MULTIPART,
    SHORT) in INBOX, the first \\Seen."""
    store = MemoryStore()
    store.add_account(USER, PASSWORD)
    store.add_account("bob", "hunter2")
    for i, data in enumerate(messages or (PLAIN, MULTIPART, SHORT)):
        store.deliver(USER, data, flags=("\\Seen",) if i == 0 and seen_first else ())
    return store


class Client:
    """One connection; `expect` and `untagged` check its answers."""

    def __init__(self, conv: Conversation) -> None:
        self.conv = conv

    @property
    def session(self):  # noqa: ANN201
        return self.conv.session

    def send(self, line: str | bytes) -> bytes:
        data = line.encode("utf-8") if isinstance(line, str) else line
        if not data.endswith(b"\n"):
            data += b"\r\n"
        return self.conv.feed(data)

    def expect(self, line: str | bytes, *responses: str | bytes) -> None:
        """Send ``line``; the answer must be exactly ``responses`` (CRLF each)."""
        got = self.send(line)
        want = b"".join((r.encode("utf-8") if isinstance(r, str) else r) + b"\r\n" for r in responses)
        assert got == want, f"\n got: {got!r}\nwant: {want!r}"

    def untagged(self, line: str) -> list[bytes]:
        """Send a tagged command that must end OK; its untagged lines."""
        tag = line.split(" ", 1)[0].encode()
        lines = self.send(line).split(b"\r\n")
        assert lines[-1] == b"", lines
        assert lines[-2].startswith(tag + b" OK "), lines
        return lines[:-2]

    def poll(self) -> bytes:
        return self.conv.poll()


def connect(store: MemoryStore | None = None, *, user: str | None = USER, select: str | None = None,
            enable: str | None = None, **kw: object) -> Client:
    """A connection greeted, logged in (unless ``user`` is None), with
    ``enable`` ENABLEd and ``select`` SELECTed; their answers consumed."""
    c = Client(Conversation(store if store is not None else store_with_mail(), **kw))  # type: ignore[arg-type]
    if user is not None:
        c.untagged(f"L1 LOGIN {user} {store.passwords[user] if store is not None else PASSWORD}")
    if enable:
        c.untagged(f"L2 ENABLE {enable}")
    if select:
        c.untagged(f"L3 SELECT {select}")
    return c
