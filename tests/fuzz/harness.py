"""Fuzz drivers shared by the atheris targets (fuzz_*.py) and the bounded
hypothesis tests (test_fuzz_targets.py).

Each ``run_*`` function takes one fuzz input (bytes), drives a sans-I/O engine
or the message layer with it exactly as the net glue would, and checks the
invariants of the robustness requirement. SMTP and POP3 engines have their
requests answered by a small fake; IMAP runs its real command layer
(protocols/imap/session.py) over the in-memory backend
(protocols/imap/memory.py), so FETCH, STORE, SEARCH and the untagged updates
are the server's own code. No store, no sockets. The invariants:

* nothing raises: the only way an engine may react to bad input is its own
  protocol error reply (SMTP 5xx/4xx, POP3 -ERR, IMAP BAD/NO/BYE);
* every reply is well-formed on the wire: CRLF-terminated lines, SMTP reply
  codes of three digits with consistent multi-line continuation, POP3 status
  lines and dot-terminated multi-line bodies, IMAP tagged / untagged /
  continuation responses with balanced parentheses, closed quoted strings and
  literal counts that match;
* output is bounded for a bounded input, and the event loop ends (a loop
  guard here; libFuzzer's ``-timeout`` and hypothesis's ``deadline`` guard
  the wall clock).

A violation raises ``FuzzFailure`` (an AssertionError), so atheris records the
input as a crash and hypothesis shrinks it.

Input layout (the same for the corpus files in corpus/<target>/): the first
two bytes are a header, the rest is what the client sends. Header byte 0
picks a start state (see each driver), header bytes 0 and 1 seed the random
choices of chunking and of the fake's (or the other session's) doings, so every input replays
deterministically. Inputs shorter than two bytes are padded with zeros.
"""

from __future__ import annotations

import base64
import random
import re

HEADER = 2
MAX_EVENTS = 20_000  # per input: an engine that loops forever trips this


class FuzzFailure(AssertionError):
    """An invariant of the robustness requirement does not hold."""


def check(condition: object, message: str, detail: object = "") -> None:
    if not condition:
        raise FuzzFailure(f"{message}: {detail!r}"[:2000])


def split_input(data: bytes) -> tuple[int, random.Random, bytes]:
    """(start-state selector, seeded RNG, client bytes) of one fuzz input."""
    head = (data[:HEADER] + b"\0" * HEADER)[:HEADER]
    return head[0], random.Random(int.from_bytes(head, "big")), data[HEADER:]


def chunked(wire: bytes, rng: random.Random) -> list[bytes]:
    """Split ``wire`` into arbitrary pieces: whole, bytewise, or random sizes."""
    mode = rng.randrange(4)
    if mode == 0 or not wire:
        return [wire] if wire else []
    if mode == 1:
        return [wire[i : i + 1] for i in range(len(wire))]
    out = []
    i = 0
    while i < len(wire):
        n = rng.randint(1, 64 if mode == 2 else 700)
        out.append(wire[i : i + n])
        i += n
    return out


# ============================================================== SMTP

SMTP_REPLY_LINE = re.compile(rb"\A([2-5]\d\d)([ -])([^\r\n]*)\Z")
SMTP_PREAMBLES = (
    b"",
    b"EHLO client.example\r\n",
    b"EHLO client.example\r\nMAIL FROM:<a@b.example>\r\n",
    b"EHLO client.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n",
    b"EHLO client.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n",
    b"HELO client.example\r\n",
    b"EHLO client.example\r\nAUTH PLAIN\r\n",
    b"EHLO client.example\r\nMAIL FROM:<> BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<postmaster>\r\nDATA\r\n",
)


def smtp_check_replies(out: bytes) -> int:
    """Check SMTP reply syntax (RFC 5321 4.2); returns the number of replies."""
    check(out.endswith(b"\r\n"), "SMTP output not CRLF-terminated", out[-80:])
    replies = 0
    open_code: bytes | None = None
    for line in out[:-2].split(b"\r\n"):
        m = SMTP_REPLY_LINE.match(line)
        check(m, "malformed SMTP reply line", line)
        assert m is not None
        code, sep = m.group(1), m.group(2)
        if open_code is not None:
            check(code == open_code, "multi-line reply changes its code", line)
        if sep == b"-":
            open_code = code
        else:
            open_code = None
            replies += 1
    check(open_code is None, "multi-line SMTP reply never finished", out[-200:])
    return replies


def run_smtp(data: bytes) -> bytes:
    """Drive the SMTP server engine (protocols/smtp/server.py) with one input."""
    from mailyard.protocols.smtp import (
        FLUSH,
        NEED_DATA,
        PAUSED,
        AbuseBudgets,
        AuthReceived,
        AuthResponse,
        Closed,
        ExpnReceived,
        HeloReceived,
        MessageReceived,
        Reply,
        ServerConfig,
        SMTPServerEngine,
        StartTLSReceived,
    )

    selector, rng, wire = split_input(data)
    config = ServerConfig(
        hostname="mx.example.test",
        max_message_size=rng.choice([0, 200, 5000]),
        max_text_line=rng.choice([80, 1000]),
        max_command_line=rng.choice([64, 512]),
        max_auth_line=rng.choice([100, 12288]),
        extensions_extra=("STARTTLS", "AUTH PLAIN LOGIN CRAM-MD5"),
        vrfy_enabled=bool(selector & 0x10),
        expn_enabled=bool(selector & 0x20),
        require_auth_for_mail=bool(selector & 0x40),
        strict_line_endings=not selector & 0x80,
        smtputf8=rng.random() < 0.8,
        dsn=rng.random() < 0.8,
        budgets=AbuseBudgets(max_bad_commands=rng.choice([3, 20]), max_errors=rng.choice([5, 50])),
    )
    engine = SMTPServerEngine(config, tls_active=rng.random() < 0.2)
    if rng.random() < 0.2:
        engine.offer(config.extensions_extra, auth_unadvertised={"XOAUTH2"})
    wire = SMTP_PREAMBLES[selector % len(SMTP_PREAMBLES)] + wire
    out = bytearray(engine.greeting())
    steps = 0
    messages = 0
    for chunk in [*chunked(wire, rng), b""]:
        engine.receive_data(chunk)
        while True:
            steps += 1
            check(steps < MAX_EVENTS, "SMTP event loop does not end")
            ev = engine.next_event()
            if ev is NEED_DATA or isinstance(ev, Closed):
                break
            check(ev is not PAUSED, "engine paused although nothing is pending")
            if ev is FLUSH:  # the replies queued so far are written before it reads on
                out += engine.data_to_send()
                continue
            if not ev.needs_answer:
                continue
            roll = rng.random()
            if isinstance(ev, AuthReceived | AuthResponse):
                if roll < 0.5:
                    engine.auth_challenge(base64.b64encode(b"challenge").decode() if roll < 0.25 else "")
                elif roll < 0.75:
                    engine.auth_success("user@example.test")
                else:
                    engine.reject(535, "5.7.8", "Authentication credentials invalid")
            elif isinstance(ev, ExpnReceived):
                if roll < 0.7:
                    engine.respond(Reply(250, "2.1.5", ["<a@b.example>", "<c@d.example>"]))
                else:
                    engine.reject(550, "5.1.1", "No such list")
            elif isinstance(ev, StartTLSReceived):
                if roll < 0.7:
                    engine.accept()  # the glue would now run the TLS handshake
                else:
                    engine.reject(454, "4.7.0", "TLS not available")
            elif isinstance(ev, MessageReceived):
                messages += 1
                check(config.max_message_size == 0 or len(ev.data) <= config.max_message_size,
                      "message over the size limit accepted", len(ev.data))
                check(ev.data == b"" or ev.data.endswith(b"\r\n"), "message data not ending in CRLF",
                      ev.data[-20:])
                if config.strict_line_endings:
                    n = ev.data.count(b"\r\n")
                    check(ev.data.count(b"\r") == n == ev.data.count(b"\n"),
                          "bare CR or LF in accepted data", ev.data[:200])
                # RFC 5321 4.5.3.1.6: text lines of at most max_text_line octets with CRLF
                # (measured as data.py does: up to each LF, a bare CR inside the line)
                longest = max(len(x) for x in ev.data.split(b"\n"))
                check(longest + 1 <= config.max_text_line, "over-long line accepted", longest)
                if roll < 0.7:
                    engine.accept()
                else:
                    engine.reject(554, "5.6.0", ["Rejected", "multi\r\nline 250 ok"])
            elif isinstance(ev, HeloReceived):
                engine.accept() if roll < 0.9 else engine.reject(550, "5.7.1", "Go away")
            elif roll < 0.8:
                engine.accept()
            elif roll < 0.97:
                engine.reject(550, "5.1.1", "No such user here")
            else:
                engine.respond(Reply(421, "4.3.2", "Service shutting down"))
        out += engine.data_to_send()
        if engine.closed:
            break
    out += engine.data_to_send()
    out = bytes(out)
    replies = smtp_check_replies(out)
    # One reply per command line or data terminator, plus greeting and a
    # closing 421: a reply never comes without a line that asked for it.
    lines = wire.count(b"\n") + wire.count(b"\r") + 2
    check(replies <= lines, "more SMTP replies than client lines", (replies, lines))
    check(len(out) <= 2048 + 256 * len(wire), "SMTP output out of proportion", len(out))
    return out


# ============================================================== POP3

POP3_MESSAGES = (
    b"From: a@example.test\r\nSubject: one\r\n\r\nbody line\r\n.dotted\r\n..two\r\n",
    b".\n\n.",
    b"Subject: no body",
    b"",
    b"X: y\n\nbare\nLF\r\nmixed\r\n.\r\nend",
)
POP3_PREAMBLES = (
    b"",
    b"USER alice\r\nPASS secret\r\n",
    b"USER alice\r\nPASS secret\r\nDELE 1\r\n",
    b"APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n",
    b"AUTH PLAIN\r\n",
    b"CAPA\r\n",
)
POP3_STATUS = re.compile(rb"\A(\+OK|-ERR|\+)( [^\r\n]*)?\Z")
POP3_LISTING = re.compile(rb"\A(\d+ \d+|\d+ [\x21-\x7e]{1,70}|[A-Z0-9-]+( [\x21-\x7e]+)*)\Z")


def _pop3_message_lines() -> set[bytes]:
    from mailyard.protocols.pop3.engine import _dot_stuff, pop3_message_bytes

    lines: set[bytes] = set()
    for raw in POP3_MESSAGES:
        lines.update(_dot_stuff(pop3_message_bytes(raw)).split(b"\r\n"))
    return lines


def pop3_check_output(out: bytes, message_lines: set[bytes]) -> None:
    """POP3 output is CRLF lines; every line is a status line, a listing line,
    the "." terminator, or a line of a (dot-stuffed) message (RFC 1939 3)."""
    check(out.endswith(b"\r\n"), "POP3 output not CRLF-terminated", out[-80:])
    lines = out[:-2].split(b"\r\n")
    check(lines[0].startswith(b"+OK"), "POP3 greeting is not +OK", lines[0])
    for line in lines:
        check(b"\n" not in line and b"\r" not in line, "bare CR/LF in POP3 output", line)
        if POP3_STATUS.match(line) or line == b"." or POP3_LISTING.match(line):
            continue
        check(line in message_lines, "POP3 line is neither status, listing nor message", line)
    check(b"internal error" not in out, "POP3 engine hit an internal error", out[-300:])


def run_pop3(data: bytes) -> bytes:
    """Drive the POP3 server engine (protocols/pop3/engine.py) with one input."""
    import hashlib

    from mailyard.protocols.pop3.engine import (
        FLUSH,
        NEED_DATA,
        AbuseBudgets,
        APOPLogin,
        Closed,
        MaildropEntry,
        POP3Server,
        RetrieveMessage,
        SASLResponse,
        SASLStart,
        StartTLS,
        Update,
        UserPassLogin,
        pop3_message_bytes,
    )

    selector, rng, wire = split_input(data)
    timestamp = "<1896.697170952@dbc.mtview.ca.us>"
    engine = POP3Server(
        timestamp=timestamp if selector & 0x10 else None,
        sasl_mechanisms=("PLAIN", "LOGIN") if selector & 0x20 else ("PLAIN",),
        plaintext_auth=not selector & 0x40,
        tls_available=bool(selector & 0x80),
        budgets=AbuseBudgets(max_auth_failures=rng.choice([1, 3]), max_bad_commands=rng.choice([2, 20])),
    )
    store = {uid: raw for uid, raw in enumerate(POP3_MESSAGES, 1)}
    entries = [MaildropEntry(uid, len(pop3_message_bytes(raw)), f"uid-{uid}") for uid, raw in store.items()]
    wire = POP3_PREAMBLES[selector % len(POP3_PREAMBLES)] + wire
    out = bytearray(engine.data_to_send())
    steps = 0

    def login(ok: bool, name: str | None) -> None:
        roll = rng.random()
        if not ok or roll < 0.1:
            engine.reject_login("AUTH", "Authentication failed")
        elif roll < 0.2:
            engine.reject_login("IN-USE", "maildrop already locked")
        else:
            engine.accept_login(entries, name)

    def sasl(wire_token: bytes) -> None:
        if wire_token == b"*":
            engine.reject_login(None, "authentication cancelled")
            return
        if rng.random() < 0.3:
            engine.sasl_challenge(b"more")
            return
        try:
            decoded = base64.b64decode(wire_token, validate=True)
        except ValueError:
            engine.reject_login("AUTH", "Invalid base64")
            return
        login(decoded.endswith(b"\0secret"), "alice")

    for chunk in [*chunked(wire, rng), b""]:
        engine.receive_data(chunk)
        closed = False
        while True:
            steps += 1
            check(steps < MAX_EVENTS, "POP3 event loop does not end")
            ev = engine.next_event()
            if ev is NEED_DATA:
                break
            if isinstance(ev, Closed):
                closed = True
                break
            if ev is FLUSH:  # the replies queued so far are written before it reads on
                out += engine.data_to_send()
                continue
            if isinstance(ev, UserPassLogin):
                login(ev.username == "alice" and ev.password == "secret", ev.username)
            elif isinstance(ev, APOPLogin):
                digest = hashlib.md5((ev.timestamp + "tanstaaf").encode()).hexdigest()
                login(ev.digest == digest, ev.username)
            elif isinstance(ev, SASLStart):
                if ev.initial_response is None:
                    engine.sasl_challenge(b"")
                else:
                    sasl(ev.initial_response)
            elif isinstance(ev, SASLResponse):
                sasl(ev.line)
            elif isinstance(ev, RetrieveMessage):
                raw = store.get(ev.key)
                if raw is None or rng.random() < 0.1:
                    engine.message_unavailable()
                else:
                    engine.send_message(raw)
            elif isinstance(ev, Update):
                check(all(k in store for k in ev.keys), "UPDATE removes unknown keys", ev.keys)
                engine.update_done(rng.random() < 0.9)
            elif isinstance(ev, StartTLS):
                engine.tls_started()
            else:
                raise FuzzFailure(f"unknown POP3 event {ev!r}")
        out += engine.data_to_send()
        if closed:
            break
    out = bytes(out)
    pop3_check_output(out, _MESSAGE_LINES_CACHE or _cache_pop3_lines())
    biggest = max(len(m) for m in POP3_MESSAGES) * 2 + 64
    lines = wire.count(b"\n") + 2
    check(len(out) <= 512 + lines * biggest, "POP3 output out of proportion", len(out))
    return out


_MESSAGE_LINES_CACHE: set[bytes] = set()


def _cache_pop3_lines() -> set[bytes]:
    _MESSAGE_LINES_CACHE.update(_pop3_message_lines())
    return _MESSAGE_LINES_CACHE


# ============================================================== IMAP

IMAP_TAG = rb"[^\x00-\x20(){%*\"\\\x7f-\xff+]+"  # "]" is allowed (resp-specials)
IMAP_STATUS = re.compile(rb"\A(" + IMAP_TAG + rb"|\*) (OK|NO|BAD|BYE|PREAUTH) ")
IMAP_UNTAGGED = re.compile(rb"\A\* ")
IMAP_CONT = re.compile(rb"\A\+( |\r\n)")
_LITERAL_AT_END = re.compile(rb"~?\{(\d+)\+?\}\Z")


def imap_split_responses(out: bytes) -> list[bytes]:
    """Cut server output into responses, each CRLF-terminated, stepping over
    literals (RFC 9051 4.3): a line ending in {n} continues after n octets."""
    responses = []
    i = 0
    while i < len(out):
        start = i
        while True:
            j = out.find(b"\r\n", i)
            check(j >= 0, "IMAP response not CRLF-terminated", out[i : i + 200])
            line = out[i:j]
            check(b"\n" not in line and b"\r" not in line, "bare CR/LF in an IMAP response line", line)
            i = j + 2
            m = _LITERAL_AT_END.search(line)
            if m is None:
                break
            n = int(m.group(1))
            check(i + n <= len(out), "IMAP literal longer than the output", line)
            i += n
        responses.append(out[start:i])
    return responses


def imap_check_data(data: bytes, start: int = 0) -> list:
    """Parse response data (after the tag) as IMAP values and return them:
    atoms/numbers as bytes, quoted strings and literals as ('s', bytes), lists
    as Python lists. Brackets (BODY[...], [CODE ...]) nest like parens."""
    stack: list[list] = [[]]
    closers: list[bytes] = []
    i = start
    n = len(data)
    while i < n:
        ch = data[i : i + 1]
        if ch == b" ":
            i += 1
        elif ch in (b"(", b"["):
            new: list = []
            stack[-1].append(new)
            stack.append(new)
            closers.append(b")" if ch == b"(" else b"]")
            i += 1
        elif ch in (b")", b"]"):
            check(closers and closers[-1] == ch, "unbalanced IMAP parentheses", data[:300])
            closers.pop()
            stack.pop()
            i += 1
        elif ch == b'"':
            j = i + 1
            buf = bytearray()
            while True:
                check(j < n, "unterminated IMAP quoted string", data[i : i + 200])
                c = data[j]
                if c == 0x5C:  # backslash: only \" and \\ are allowed (RFC 9051 9 quoted-specials)
                    check(j + 1 < n and data[j + 1] in b'"\\', "bad escape in IMAP quoted string", data[i:j + 2])
                    buf.append(data[j + 1])
                    j += 2
                    continue
                if c == 0x22:
                    break
                check(c not in (0x0D, 0x0A, 0x00), "CR/LF/NUL in IMAP quoted string", data[i : j + 1])
                buf.append(c)
                j += 1
            stack[-1].append(("s", bytes(buf)))
            i = j + 1
        elif ch in (b"{", b"~"):
            m = re.compile(rb"~?\{(\d+)\+?\}\r\n").match(data, i)
            check(m, "malformed IMAP literal", data[i : i + 40])
            assert m is not None
            count = int(m.group(1))
            stack[-1].append(("s", data[m.end() : m.end() + count]))
            i = m.end() + count
        elif ch == b"\r":
            check(data[i:] == b"\r\n", "CR inside an IMAP response", data[i : i + 40])
            i = n
        else:
            m = re.compile(rb"[^ ()\[\]\"{\r\n]+").match(data, i)
            check(m, "unexpected byte in IMAP response", data[i : i + 40])
            assert m is not None
            stack[-1].append(m.group())
            i = m.end()
    check(not closers, "unclosed IMAP parenthesis", data[:300])
    return stack[0]


def imap_check_responses(out: bytes) -> int:
    """Every response is a continuation, a tagged or untagged status, or
    untagged data whose values parse; returns the number of tagged ones."""
    tagged = 0
    for resp in imap_split_responses(out):
        if IMAP_CONT.match(resp):
            continue
        m = IMAP_STATUS.match(resp)
        if m is not None:
            if m.group(1) != b"*":
                tagged += 1
                check(m.group(2) in (b"OK", b"NO", b"BAD"), "tagged response with untagged status", resp)
            # resp-text: an optional [code] then free text; the code must balance
            rest = resp[m.end():]
            if rest.startswith(b"["):
                close = rest.find(b"]")
                check(close > 0, "unterminated IMAP response code", resp)
            continue
        check(IMAP_UNTAGGED.match(resp), "IMAP response is neither tagged, untagged nor +", resp[:200])
        imap_check_data(resp, 2)
    return tagged


IMAP_MESSAGES = (
    b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\nFrom: Terry Gray <gray@cac.washington.edu>\r\n"
    b"Subject: IMAP4rev2 WG mtg summary and minutes\r\nTo: imap@cac.washington.edu\r\n"
    b"cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\r\nMessage-Id: <B27397-0100000@cac.washington.edu>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\nHello Joe, do you think we can meet at 3:30 tomorrow?\r\n",
    b'From: =?utf-8?q?J=C3=B6rg?= <j@x.example>\r\nSubject: =?utf-8?b?w6TDtsO8?=\r\nMIME-Version: 1.0\r\n'
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\npre\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n--b1\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=x.bin\r\n\r\nAAECAwQ=\r\n--b1\r\n"
    b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--b1\r\n"
    b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n--b1--\r\n",
    b"Subject: no body and 8-bit \xc3\xa9 \xff",
)
IMAP_PREAMBLES = (
    b"",
    b"a1 LOGIN alice secret\r\n",
    b"a1 LOGIN alice secret\r\na2 SELECT INBOX\r\n",
    b"a1 LOGIN alice secret\r\na2 ENABLE IMAP4rev2 UTF8=ACCEPT QRESYNC\r\na3 SELECT INBOX\r\n",
    b"a1 AUTHENTICATE PLAIN\r\n",
    b"a1 LOGIN alice secret\r\na2 EXAMINE INBOX (CONDSTORE)\r\na3 IDLE\r\n",
)
IMAP_MAILBOXES = ("Archive/2024", "Archive/2025", "\u00e4\u00f6\u00fc")
IMAP_MAX_CHANGES = 3  # changes by "another session" per input (keeps the output in proportion)

_IMAP_DERIVED: dict = {}  # derive() is deterministic: shared by every input's store


def _imap_store():  # noqa: ANN202
    """alice's account (password "secret") with IMAP_MESSAGES in INBOX at
    UIDs 1, 3, 5 (2 and 4 expunged: VANISHED has something to say), the
    first \\Seen, and the mailboxes of IMAP_MAILBOXES."""
    from mailyard.protocols.imap.memory import MemoryStore

    store = MemoryStore(derived=_IMAP_DERIVED)
    store.add_account("alice", "secret")
    for name in IMAP_MAILBOXES:
        store.create("alice", name)
    inbox = store.find("alice", "INBOX")
    for i, raw in enumerate(IMAP_MESSAGES):
        store.deliver("alice", raw, flags=("\\Seen",) if i == 0 else ())
        if i < len(IMAP_MESSAGES) - 1:
            store.deliver("alice", b"Subject: gone\r\n\r\n")
    gone = [u for u, (data, _) in inbox.messages.items() if data.startswith(b"Subject: gone")]
    _complete(_imap_backend(store).expunge(inbox.record(), gone))
    return store


def _imap_backend(store):  # noqa: ANN001, ANN202
    from mailyard.protocols.imap.memory import MemoryBackend

    return MemoryBackend(store, "alice")


def _complete(coro):  # noqa: ANN001, ANN202
    """Run a coroutine of the in-memory backend (it never waits)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise FuzzFailure("the in-memory backend waited")


def _imap_other_session(store, rng: random.Random) -> None:  # noqa: ANN001
    """A change by another session between two chunks of input: a delivery,
    a flag change, an expunge, a new keyword, or the deletion of a mailbox
    the session may have selected."""
    backend = _imap_backend(store)
    inbox = store.find("alice", "INBOX")
    roll = rng.random()
    uids = sorted(inbox.messages)
    if roll < 0.3 or not uids:
        store.deliver("alice", rng.choice(IMAP_MESSAGES))
    elif roll < 0.6:
        flag = rng.choice(["\\Seen", "\\Deleted", "\\Flagged", "$Junk", "NewKeyword"])
        _complete(backend.store_flags(inbox.record(), [rng.choice(uids)], [flag], rng.choice(["add", "remove"])))
    elif roll < 0.85:
        _complete(backend.expunge(inbox.record(), [rng.choice(uids)]))
    else:
        name = rng.choice(IMAP_MAILBOXES)
        if store.find("alice", name) is not None:
            store.delete("alice", name)


def run_imap(data: bytes) -> bytes:
    """Drive the real IMAP layer -- engine (framing, parser, state machine)
    and the command semantics of protocols/imap/session.py -- over the
    in-memory backend (protocols/imap/memory.py), with another session
    changing the mailbox between chunks of input and the disk filling up."""
    from mailyard.protocols.contract import AbuseBudgets
    from mailyard.protocols.imap import Limits
    from mailyard.protocols.imap.memory import Conversation
    from mailyard.protocols.imap.session import ImapConfig

    selector, rng, wire = split_input(data)
    limits = Limits(
        max_line=rng.choice([200, 8192]),
        max_literal=rng.choice([100, 65536]),
        max_append=rng.choice([300, 1 << 20]),
    )
    store = _imap_store()
    conv = Conversation(
        store, limits=limits,
        config=ImapConfig(budgets=AbuseBudgets(max_auth_failures=rng.choice([1, 3]),
                                                max_bad_commands=rng.choice([3, 20]))),
        plaintext=not selector & 0x40, can_start_tls=bool(selector & 0x20),
    )
    concurrent = bool(selector & 0x80)
    changes = 0
    wire = IMAP_PREAMBLES[selector % len(IMAP_PREAMBLES)] + wire
    out = bytearray(conv.greeting)
    for chunk in chunked(wire, rng):
        out += conv.feed(chunk)
        if conv.closed:
            break
        store.full = False
        if concurrent and changes < IMAP_MAX_CHANGES and rng.random() < 0.3:
            changes += 1
            _imap_other_session(store, rng)
            out += conv.poll()  # an IDLE announces it at once
        store.full = rng.random() < 0.05  # the next commands' writes fail
    out += conv.end_input()
    conv.close()
    out = bytes(out)
    check(b"[SERVERBUG]" not in out, "the IMAP layer crashed on a command", out[-600:])
    tagged = imap_check_responses(out)
    check(tagged <= wire.count(b"\n") + 1, "more tagged IMAP responses than command lines",
          (tagged, wire.count(b"\n")))
    literal_cap = sum(len(m) for m in IMAP_MESSAGES) * 4
    check(len(out) <= 4096 + len(wire) * literal_cap // 8, "IMAP output out of proportion", len(out))
    return out


# ============================================================== message layer


def _check_envelope(env: list) -> None:
    check(len(env) == 10, "ENVELOPE has not 10 fields", env)
    for i, item in enumerate(env):
        if 2 <= i <= 7:
            if item == b"NIL":
                continue
            check(isinstance(item, list) and item, "ENVELOPE address list is not a list", item)
            for addr in item:
                check(isinstance(addr, list) and len(addr) == 4, "ENVELOPE address is not 4 fields", addr)
                for x in addr:
                    check(x == b"NIL" or isinstance(x, tuple), "ENVELOPE address field is not nstring", x)
        else:
            check(item == b"NIL" or isinstance(item, tuple), "ENVELOPE field is not nstring", item)


def _check_body(bs: list, depth: int = 0) -> None:
    check(isinstance(bs, list) and bs, "BODYSTRUCTURE is not a non-empty list", bs)
    check(depth < 200, "BODYSTRUCTURE too deep")
    if isinstance(bs[0], list):
        k = 0
        while k < len(bs) and isinstance(bs[k], list):
            _check_body(bs[k], depth + 1)
            k += 1
        check(k < len(bs) and isinstance(bs[k], tuple), "multipart without media-subtype string", bs)
        return
    check(len(bs) >= 7, "body-type-1part with fewer than 7 fields", bs)
    check(isinstance(bs[0], tuple) and isinstance(bs[1], tuple), "media type not strings", bs[:2])
    check(re.fullmatch(rb"\d+", bs[6] if isinstance(bs[6], bytes) else b"x"), "body-fld-octets not a number", bs[6])
    mtype = bs[0][1].upper()
    if mtype == b"MESSAGE" and bs[1][1].upper() in (b"RFC822", b"GLOBAL") and len(bs) >= 10 and isinstance(bs[7], list):
        _check_envelope(bs[7])
        _check_body(bs[8], depth + 1)
        check(re.fullmatch(rb"\d+", bs[9] if isinstance(bs[9], bytes) else b"x"), "message lines not a number", bs[9])
    elif mtype == b"TEXT":
        check(len(bs) >= 8 and re.fullmatch(rb"\d+", bs[7] if isinstance(bs[7], bytes) else b"x"),
              "TEXT part without body-fld-lines", bs)


def _only_nil_numbers_strings(values: list) -> None:
    for v in values:
        if isinstance(v, list):
            _only_nil_numbers_strings(v)
        elif isinstance(v, bytes):
            check(v == b"NIL" or v.isdigit(), "bare atom in ENVELOPE/BODYSTRUCTURE", v)


def run_message(data: bytes) -> None:
    """Parse, derive ENVELOPE/BODYSTRUCTURE/offsets (message/derived.py) and
    check the IMAP forms; the whole input is the message (no header bytes)."""
    import json

    from mailyard.message.address import parse_address_list
    from mailyard.message.dates import parse_date
    from mailyard.message.derived import Derived, body_structure, derive_unguarded
    from mailyard.message.headers import decode_words
    from mailyard.message.imap_syntax import body_bytes, envelope_bytes
    from mailyard.message.parse import parse_message, split_header_body
    from mailyard.protocols.imap import fetch as f
    from mailyard.protocols.imap.commands import Section

    raw = data
    header, body = split_header_body(raw)
    check(header + body == raw, "split_header_body loses bytes")
    msg = parse_message(raw)
    # Header values as stored (not msg[name]: the stdlib's structured header
    # classes can raise on odd input, so mailyard reads the raw values and
    # parses addresses and encoded words itself, as web/render.py does).
    for name, value in msg._headers:
        text = str(value)
        decoded = decode_words(text)
        if not re.search("[\ud800-\udfff]", text):  # 8-bit bytes arrive as surrogates
            decoded.encode("utf-8")  # encoded words decode to valid Unicode
        if name.lower() in ("from", "to", "cc", "bcc", "reply-to", "sender"):
            parse_address_list(text)
            parse_address_list(text, decode=False)
        elif name.lower() == "date":
            parse_date(text)
    d = derive_unguarded(raw)
    check(d.size == len(raw), "derived size differs", d.size)
    for spec, (h, b, e) in [*d.parts.items(), *d.messages.items()]:
        check(0 <= h <= b <= e <= len(raw), "part offsets out of order", (spec, h, b, e))
    env_wire = envelope_bytes(d.envelope)
    values = imap_check_data(env_wire)
    check(len(values) == 1 and isinstance(values[0], list), "ENVELOPE is not one list", env_wire[:200])
    _check_envelope(values[0])
    _only_nil_numbers_strings(values)
    for bs in (d.bodystructure, body_structure(d.bodystructure)):
        wire = body_bytes(bs)
        values = imap_check_data(wire)
        check(len(values) == 1 and isinstance(values[0], list), "BODYSTRUCTURE is not one list", wire[:200])
        _check_body(values[0])
        _only_nil_numbers_strings(values)
    # every part the structure names can be fetched (RFC 9051 6.4.5)
    for spec in d.parts:
        if not spec:
            continue
        part = tuple(int(x) for x in spec.split("."))
        for text in (None, "MIME"):
            got = f.section_data(raw, d.parts, Section(part, text))
            check(got is not None, "named part cannot be fetched", spec)
        for text in ("", "MIME", "HEADER", "TEXT"):
            d.section_range(spec, text)
        try:
            f.binary_data(raw, d.parts, part)
        except f.UnknownCTE:
            pass
    data_json = json.dumps(d.to_json(), ensure_ascii=False).encode("utf-8")
    back = Derived.from_json(json.loads(data_json))
    check(back.parts == d.parts and back.envelope == d.envelope, "Derived JSON round trip differs")



RUNNERS = {"smtp": run_smtp, "pop3": run_pop3, "imap": run_imap, "message": run_message}
