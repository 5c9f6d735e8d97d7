"""FETCH and UID FETCH, byte for byte (RFC 9051 6.4.5, 6.4.9, 7.5.2; RFC 3516
BINARY; RFC 7162 3.1.4 CHANGEDSINCE/MODSEQ, 3.2.6 VANISHED)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from mailyard.protocols.imap.fetch import decode_cte

from .helpers import MULTIPART, PLAIN, SHORT, connect, store_with_mail

DATE = '"14-Nov-2023 22:13:20 +0000"'
ENVELOPE = (
    '("Wed, 17 Jul 1996 02:23:25 -0700" "IMAP4rev2 WG mtg summary" '
    '(("Terry Gray" NIL "gray" "cac.washington.edu")) (("Terry Gray" NIL "gray" "cac.washington.edu")) '
    '(("Terry Gray" NIL "gray" "cac.washington.edu")) ((NIL NIL "imap" "cac.washington.edu")) NIL NIL NIL '
    '"<B27397-0100000@cac.washington.edu>")'
)


def _most_pending(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """[the most octets the engine ever held queued], kept up to date."""
    from mailyard.protocols.imap.engine import ImapEngine

    most = [0]
    raw = ImapEngine.raw

    def counting(self: ImapEngine, data: bytes) -> None:
        raw(self, data)
        most[0] = max(most[0], self.pending)

    monkeypatch.setattr(ImapEngine, "raw", counting)
    return most


def lit(data: bytes) -> str:
    return f"{{{len(data)}}}\r\n{data.decode()}"


def test_index_attributes_and_macros() -> None:
    c = connect(select="INBOX")
    c.expect(
        "a1 FETCH 1:* (FLAGS UID RFC822.SIZE INTERNALDATE)",
        f"* 1 FETCH (FLAGS (\\Seen \\Recent) UID 1 RFC822.SIZE {len(PLAIN)} INTERNALDATE {DATE})",
        f"* 2 FETCH (FLAGS (\\Recent) UID 2 RFC822.SIZE {len(MULTIPART)} INTERNALDATE {DATE})",
        f"* 3 FETCH (FLAGS (\\Recent) UID 3 RFC822.SIZE {len(SHORT)} INTERNALDATE {DATE})",
        "a1 OK FETCH completed",
    )
    # RFC 9051 6.4.5: FAST = (FLAGS INTERNALDATE RFC822.SIZE)
    c.expect("a2 FETCH 3 FAST", f"* 3 FETCH (FLAGS (\\Recent) INTERNALDATE {DATE} RFC822.SIZE {len(SHORT)})",
             "a2 OK FETCH completed")


def test_rev2_sees_no_recent() -> None:
    c = connect(enable="IMAP4rev2", select="INBOX")
    c.expect("a1 FETCH 1:2 FLAGS", "* 1 FETCH (FLAGS (\\Seen))", "* 2 FETCH (FLAGS ())", "a1 OK FETCH completed")


def test_uid_fetch_always_returns_uid_rfc9051_6_4_9() -> None:
    c = connect(select="INBOX")
    c.expect("a1 UID FETCH 2:* (FLAGS)", "* 2 FETCH (UID 2 FLAGS (\\Recent))",
             "* 3 FETCH (UID 3 FLAGS (\\Recent))", "a1 OK UID FETCH completed")
    c.expect("a2 UID FETCH 9 FLAGS", "a2 OK UID FETCH completed")  # no such UID: nothing


def test_envelope_body_and_rfc822_header() -> None:
    c = connect(select="INBOX")
    header = PLAIN[: PLAIN.index(b"\r\n\r\n") + 4]
    c.expect(
        "a1 FETCH 1 (ENVELOPE BODY RFC822.HEADER)",
        f'* 1 FETCH (ENVELOPE {ENVELOPE} BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 55 1) '
        f"RFC822.HEADER {lit(header)})",
        "a1 OK FETCH completed",
    )


def test_bodystructure_of_a_multipart() -> None:
    c = connect(select="INBOX")
    c.expect(
        "a1 FETCH 2 BODYSTRUCTURE",
        '* 2 FETCH (BODYSTRUCTURE (("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 15 0 NIL NIL NIL '
        'NIL)("APPLICATION" "OCTET-STREAM" NIL NIL NIL "BASE64" 8 NIL NIL NIL NIL)("TEXT" "PLAIN" NIL NIL NIL '
        '"X-UUENCODE" 11 0 NIL NIL NIL NIL) "MIXED" ("BOUNDARY" "b1") NIL NIL NIL))',
        "a1 OK FETCH completed",
    )


def test_body_sections_and_partial_rfc9051_6_4_5() -> None:
    c = connect(select="INBOX")
    c.expect(
        "a1 FETCH 2 (BODY.PEEK[1.MIME] BODY.PEEK[HEADER.FIELDS (Subject FROM)] BODY.PEEK[TEXT]<0.8> "
        "BODY.PEEK[HEADER.FIELDS.NOT (From Subject MIME-Version)] BODY.PEEK[9])",
        "* 2 FETCH (BODY[1.MIME] "
        + lit(b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
        + " BODY[HEADER.FIELDS (Subject FROM)] " + lit(b"From: Jorg <j@x.example>\r\nSubject: parts\r\n\r\n")
        + " BODY[TEXT]<0> " + lit(b"--b1\r\nCo")
        + " BODY[HEADER.FIELDS.NOT (From Subject MIME-Version)] "
        + lit(b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n')
        + " BODY[9] {0}\r\n)",  # a part that does not exist reads as empty
        "a1 OK FETCH completed",
    )


def test_body_without_peek_sets_seen_and_reports_it() -> None:
    c = connect(select="INBOX")
    c.expect("a1 FETCH 3 (BODY[TEXT])", "* 3 FETCH (BODY[TEXT] {4}\r\nhi\r\n FLAGS (\\Seen \\Recent))",
             "a1 OK FETCH completed")
    c.expect("a2 FETCH 3 (RFC822.TEXT)", "* 3 FETCH (RFC822.TEXT {4}\r\nhi\r\n)", "a2 OK FETCH completed")
    c.expect("a3 FETCH 3 (RFC822)", f"* 3 FETCH (RFC822 {lit(SHORT)})", "a3 OK FETCH completed")
    c.expect("a4 FETCH 3 BODY[]<40.100>", "* 3 FETCH (BODY[]<40> {6}\r\n\r\nhi\r\n)", "a4 OK FETCH completed")


def test_examine_does_not_set_seen() -> None:
    store = store_with_mail()
    c = connect(store)
    c.untagged("a0 EXAMINE INBOX")
    c.expect("a1 FETCH 3 (BODY[TEXT])", "* 3 FETCH (BODY[TEXT] {4}\r\nhi\r\n)", "a1 OK FETCH completed")
    assert store.find("alice", "INBOX").messages[3][1].flags == frozenset()


def test_binary_rfc3516() -> None:
    c = connect(select="INBOX")
    c.expect(
        "a1 FETCH 2 (BINARY.PEEK[1] BINARY.PEEK[2] BINARY.SIZE[2] BINARY.PEEK[1]<2.3>)",
        "* 2 FETCH (BINARY[1] {7}\r\nGr\u00fc\u00dfe BINARY[2] ~{5}\r\n".encode()
        + b"\x00\x01\x02\x03\x04 BINARY.SIZE[2] 5 BINARY[1]<2> {3}\r\n\xc3\xbc\xc3)",  # octets, not characters
        "a1 OK FETCH completed",
    )


def test_binary_of_an_unknown_encoding_rfc3516_4_3() -> None:
    c = connect(select="INBOX")
    c.expect("a1 FETCH 1:2 BINARY.PEEK[3]", "* 1 FETCH (BINARY[3] {0}\r\n)", "* 2 FETCH (UID 2)",
             "a1 NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding")


def test_sequence_numbers_beyond_the_mailbox_are_bad() -> None:
    c = connect(select="INBOX")
    c.expect("a1 FETCH 4 FLAGS", "a1 BAD Invalid message sequence number")
    c.expect("a2 FETCH 2:4 FLAGS", "a2 BAD Invalid message sequence number")


def test_modseq_and_changedsince_rfc7162_3_1_4() -> None:
    c = connect(select="INBOX")
    c.untagged("a1 STORE 2 +FLAGS.SILENT (\\Flagged)")
    # a CONDSTORE-enabling FETCH: MODSEQ from now on (RFC 7162 3.1)
    c.expect("a2 FETCH 1:* (FLAGS) (CHANGEDSINCE 3)", "* OK [HIGHESTMODSEQ 4] Highest", "* 2 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ (4))",
             "a2 OK FETCH completed")
    c.expect("a3 UID FETCH 1 MODSEQ", "* 1 FETCH (UID 1 MODSEQ (1))", "a3 OK UID FETCH completed")


def test_vanished_earlier_rfc7162_3_2_6() -> None:
    c = connect(enable="QRESYNC", select="INBOX")
    c.untagged("a1 STORE 1 +FLAGS.SILENT (\\Deleted)")
    c.expect("a2 EXPUNGE", "* VANISHED 1", "a2 OK [HIGHESTMODSEQ 5] EXPUNGE completed")  # RFC 7162 3.2.7
    c.expect("a3 FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)",
             "a3 BAD VANISHED needs UID FETCH with CHANGEDSINCE and QRESYNC")
    c.expect("a4 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 4 VANISHED)", "* VANISHED (EARLIER) 1",
             "a4 OK UID FETCH completed")


def test_fetch_of_a_message_another_session_expunged_rfc2180_4_1_1() -> None:
    store = store_with_mail()
    a = connect(store, select="INBOX")
    b = connect(store, select="INBOX")
    a.untagged("x1 STORE 1 +FLAGS.SILENT (\\Deleted)")
    a.untagged("x2 EXPUNGE")
    # served until b has announced the expunge, and OK
    b.expect("y1 FETCH 1:2 (UID)", "* 1 FETCH (UID 1)", "* 2 FETCH (UID 2)", "y1 OK FETCH completed")
    b.expect("y2 NOOP", "* 1 EXPUNGE", "y2 OK NOOP completed")


def test_saved_result_as_a_sequence_set_rfc5182() -> None:
    c = connect(select="INBOX")
    c.untagged("a1 SEARCH RETURN (SAVE) UNSEEN")
    c.expect("a2 FETCH $ (UID)", "* 2 FETCH (UID 2)", "* 3 FETCH (UID 3)", "a2 OK FETCH completed")


def test_big_fetch_is_flushed_as_it_goes() -> None:
    store = store_with_mail()
    for _ in range(300):
        store.deliver("alice", MULTIPART)
    c = connect(store, select="INBOX")
    flushes = []
    flush = c.conv.flush

    async def counting() -> None:
        flushes.append(c.session.engine.pending)
        await flush()

    c.conv.flush = counting  # type: ignore[method-assign]
    lines = c.untagged("a1 FETCH 1:* (BODY.PEEK[])")
    assert len([x for x in lines if b" FETCH (BODY[] {" in x]) == 303
    # the first batches are written at once: 50 messages, then 200
    assert len(flushes) >= 2 and flushes[0] < flushes[1]


def test_fetch_of_big_messages_is_batched_by_size() -> None:
    """Batches that read messages stop at FETCH_BATCH_OCTETS (at least one
    message each), each flushed, with a pause for the other connections
    between two: five messages of 3 MB are five batches, not one."""
    big = b"Subject: big\r\n\r\n" + (b"y" * 76 + b"\r\n") * (3 * 1024 * 1024 // 78)
    store = store_with_mail()
    for _ in range(5):
        store.deliver("alice", big)
    c = connect(store, select="INBOX")
    flushes = []
    flush = c.conv.flush

    async def counting() -> None:
        flushes.append(c.session.engine.pending)
        await flush()

    c.conv.flush = counting  # type: ignore[method-assign]
    paused = c.conv.paused
    lines = c.untagged("a1 FETCH 4:8 (BODY.PEEK[])")
    assert len([x for x in lines if b" FETCH (BODY[] {" in x]) == 5
    assert c.conv.paused == paused + 4
    assert len(flushes) >= 4 and all(len(big) <= n < 2 * len(big) for n in flushes[:4]), flushes
    # the messages' bytes do not count when none is read: one batch
    paused = c.conv.paused
    c.untagged("a2 FETCH 1:8 (FLAGS RFC822.SIZE)")
    assert c.conv.paused == paused


def test_a_long_fetch_of_index_data_lets_the_others_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """A FETCH that reads no message pauses for the other connections before
    the work it formatted since the last pause would pass FETCH_TURN
    (FETCH 1:* FLAGS of a mailbox of 200,000 messages would hold the event
    loop for a third of a second), and a short one never does (it stays one
    step, no task switch)."""
    from mailyard.protocols.imap.handlers import messages

    monkeypatch.setattr(messages, "FIRST_BATCH", 1)
    # (UID FLAGS) is 1.5 units a message: two messages a turn
    monkeypatch.setattr(messages, "FETCH_TURN", 3, raising=False)
    store = store_with_mail()
    for _ in range(7):
        store.deliver("alice", SHORT)
    c = connect(store, select="INBOX")
    paused = c.conv.paused
    lines = c.untagged("a1 FETCH 1:* (UID FLAGS)")  # batches of 1, 2, 2, 2, 2 and 1 messages
    assert len(lines) == 10
    assert c.conv.paused == paused + 5
    paused = c.conv.paused
    c.untagged("a2 FETCH 1:2 (FLAGS)")
    assert c.conv.paused == paused


def test_a_fetch_of_many_items_is_batched_by_its_work() -> None:
    """A batch is formatted without a break, so it holds no more than
    FETCH_TURN of work: a hundred HEADER.FIELDS items a message make
    batches of three messages, each followed by the other connections'
    turn (they read messages), not one batch of all ten."""
    store = store_with_mail()
    for _ in range(7):
        store.deliver("alice", SHORT)
    c = connect(store, select="INBOX")
    atts = " ".join(f"BODY.PEEK[HEADER.FIELDS (X-{i})]" for i in range(100))
    paused = c.conv.paused
    lines = c.untagged(f"a1 FETCH 1:* ({atts})")
    assert len([x for x in lines if b" FETCH (BODY[HEADER.FIELDS (X-0)] {2}" in x]) == 10
    assert c.conv.paused == paused + 3  # batches of 3, 3, 3 and 1 messages


def test_many_whole_message_items_of_one_message_are_written_item_by_item(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A hundred BODY.PEEK[] of one message make a response a hundred times
    the message: it is written item by item, never more than a batch's
    octets (FETCH_BATCH_OCTETS, here 256 KiB) and an item queued at once,
    with the other connections' turn in between -- not formatted whole with
    no break (a hundred of a 25 MiB message: 2.5 GB)."""
    from mailyard.protocols.imap.handlers import messages

    monkeypatch.setattr(messages, "FETCH_BATCH_OCTETS", 256 * 1024)
    big = b"Subject: big\r\n\r\n" + (b"x" * 98 + b"\r\n") * 640  # 64 KB
    c = connect(store_with_mail(big), select="INBOX")
    most = _most_pending(monkeypatch)
    paused = c.conv.paused
    out = c.send("a1 FETCH 1 (" + " ".join(["BODY.PEEK[]"] * 100) + ")")
    item = b"BODY[] {%d}\r\n%s" % (len(big), big)
    assert out == b"* 1 FETCH (" + b" ".join([item] * 100) + b")\r\na1 OK FETCH completed\r\n"
    assert most[0] <= 256 * 1024 + len(item), most[0]
    assert c.conv.paused - paused >= 100 * len(big) // (256 * 1024 + len(item))
    # the other connections' turn: none for a small response
    paused = c.conv.paused
    assert c.untagged("a2 FETCH 1 (" + " ".join(["BODY.PEEK[HEADER]"] * 10) + ")")
    assert c.conv.paused == paused


@pytest.mark.parametrize("command", [
    "FETCH 2 (BINARY.PEEK[3])",
    "FETCH 2 (FLAGS BINARY.PEEK[3])",
    "FETCH 1:3 (UID BINARY.PEEK[3] FLAGS)",
    "UID FETCH 1:3 (BINARY.PEEK[1] BODY.PEEK[HEADER.FIELDS (Subject)])",
    "FETCH 1:3 (FLAGS BODY[] BINARY.PEEK[2] BINARY.SIZE[1] BODY.PEEK[1]<2.3> RFC822.HEADER ENVELOPE)",
])
def test_a_message_written_item_by_item_answers_as_one_written_whole(
        monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    """With FETCH_BATCH_OCTETS (here 100) so small that every message that
    reads its octets is written item by item, the answer is byte for byte
    the one of a response line formatted whole: an item refused before
    anything is written (BINARY of x-uuencode, RFC 3516 4.3) gives the message's one
    ``FETCH (UID n)`` line, not an empty ``FETCH ()`` (RFC 9051 7.5.2:
    msg-att holds at least one item) followed by a second line."""
    from mailyard.protocols.imap.handlers import messages

    whole = connect(select="INBOX").send("a1 " + command)
    monkeypatch.setattr(messages, "FETCH_BATCH_OCTETS", 100)
    assert connect(select="INBOX").send("a1 " + command) == whole


@pytest.mark.parametrize(("command", "uid"), [("FETCH", b""), ("UID FETCH", b"UID 2 ")])
def test_an_item_refused_after_part_of_the_line_is_out_ends_that_line(
        monkeypatch: pytest.MonkeyPatch, command: str, uid: bytes) -> None:
    """BINARY of x-uuencode refused after an earlier item of the message was
    written out: that line ends there, valid and with the message's UID
    (once), as the one FETCH response for the message; then NO
    [UNKNOWN-CTE] (RFC 3516 4.3)."""
    from mailyard.protocols.imap.handlers import messages

    monkeypatch.setattr(messages, "FETCH_BATCH_OCTETS", 10)
    c = connect(select="INBOX")
    out = c.send(f"a1 {command} 2 (BODY.PEEK[] BINARY.PEEK[3] FLAGS)")
    assert out == (b"* 2 FETCH (" + uid + b"BODY[] {%d}\r\n%s" % (len(MULTIPART), MULTIPART)
                   + (b"" if uid else b" UID 2") + b")\r\n"
                   + b"a1 NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding\r\n")


def test_a_batch_charges_a_message_once_per_item_that_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three BODY.PEEK[] of 80 KB messages are 240 KB of output each: with
    FETCH_BATCH_OCTETS of 256 KiB, a batch holds one message, not three."""
    from mailyard.protocols.imap.handlers import messages

    monkeypatch.setattr(messages, "FETCH_BATCH_OCTETS", 256 * 1024)
    big = b"Subject: big\r\n\r\n" + (b"x" * 98 + b"\r\n") * 800  # 80 KB
    c = connect(store_with_mail(*[big] * 5), select="INBOX")
    paused = c.conv.paused
    out = c.untagged("a1 FETCH 1:* (BODY.PEEK[] BODY.PEEK[TEXT] BODY.PEEK[1])")
    assert len([x for x in out if x.startswith(b"* ") and b" FETCH (" in x]) == 5
    assert c.conv.paused == paused + 4


def test_header_fields_items_parse_the_header_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hundred HEADER.FIELDS items of a message with a 300 KB header read
    its header once (one fetch.ParsedHeader a message), not a hundred times."""
    from mailyard.protocols.imap import fetch

    lines = 3000
    hdr = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 80) for i in range(lines))
    big = b"From: bob@example.test\r\n" + hdr + b"Subject: big\r\n\r\nbody\r\n"
    c = connect(store_with_mail(*[big] * 6), select="INBOX")
    parsed = [0]

    class Counting(fetch.ParsedHeader):
        __slots__ = ()

        def __init__(self, *args: Any, **kw: Any) -> None:
            parsed[0] += 1
            super().__init__(*args, **kw)

    monkeypatch.setattr(fetch, "ParsedHeader", Counting)
    atts = " ".join(f"BODY.PEEK[HEADER.FIELDS (X-Filler-{i} Subject)]" for i in range(100))
    out = c.untagged(f"a1 FETCH 1:* ({atts})")
    assert len([x for x in out if x.startswith(b"* ") and b" FETCH (" in x]) == 6
    assert parsed[0] == 6


def test_a_parsed_header_keeps_offsets_not_copies() -> None:
    """fetch.ParsedHeader keeps where each field starts, not a copy of its
    lines: a 400 KB header of 100,000 short fields holds about 8 octets a
    field (measured with tracemalloc; copies took about 190), and selects
    as HEADER.FIELDS (.NOT) must (RFC 9051 6.4.5): folded lines kept with
    their field, a line without a field name only in neither, the header
    ending at its blank line."""
    import tracemalloc

    from mailyard.protocols.imap.fetch import ParsedHeader, field_names

    fields = 100_000
    header = b"a:\r\n" * fields + b"\r\n"
    tracemalloc.start()
    try:
        parsed = ParsedHeader(header, field_names(["a", "b"]))
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept < 16 * fields, kept
    assert parsed.select(["A"], False) == header
    assert parsed.select(["b"], True) == header
    assert parsed.select(["a"], True) == b"\r\n"

    h = (b" lead\r\nFrom: a\r\n\tb\r\nno name\r\nSubject : s\r\nTo: t\r\n c\r\n"
         b"X-A:\r\nFrom: z\r\n\r\nTo: body\r\n")
    p = ParsedHeader(h, field_names(["from", "to", "subject", "x-a", "nothing"]))
    assert p.select(["from", "TO"], False) == b"From: a\r\n\tb\r\nTo: t\r\n c\r\nFrom: z\r\n\r\n"
    assert p.select(["subject"], False) == b"Subject : s\r\n\r\n"
    assert p.select(["To", "x-a"], True) == b"From: a\r\n\tb\r\nSubject : s\r\nFrom: z\r\n\r\n"
    assert p.select(["nothing"], False) == b"\r\n"


def _reference_select(header: bytes, names: list[str], exclude: bool) -> bytes:
    """HEADER.FIELDS (.NOT) as one regular expression over the header reads
    it (RFC 5322 2.2: a field is a line with its name, if it has one, and
    the folded lines after it; lines end with CRLF, LF or a lone CR; the
    header ends at its blank line): what fetch.ParsedHeader must give."""
    import re

    wanted = {n.lower().encode() for n in names}
    out = []
    for m in re.finditer(rb"(?:([^:\s]+)[ \t]*:)?[^\r\n]*(?:\r\n|\r|\n|\Z)(?:[ \t][^\r\n]*(?:\r\n|\r|\n|\Z))*",
                         header):
        at, end = m.span()
        if at == end or header[at:at + 1] == b"\n" or header[at:at + 2] == b"\r\n":
            break
        if header[at] in b" \t":
            continue  # folded lines before any field
        name = m.group(1).lower() if m.group(1) else None
        if (name in wanted) != exclude and not (exclude and name is None):
            out.append(m.group())
    return b"".join(out) + b"\r\n"


@pytest.mark.parametrize("short_name", [256, 2], ids=["as-is", "names-read-as-long"])
def test_a_header_cut_and_selected_in_slices_gives_the_same_fields(
        monkeypatch: pytest.MonkeyPatch, short_name: int) -> None:
    """fetch.ParsedHeader cut a few lines or octets at a time, in place in
    the data around it, and its selections made a few fields or octets at
    a time, give byte for byte the fields a regular expression over the
    whole header finds, for headers of every shape: folded lines (before
    any field too), lines without a field name, names with blanks before
    the colon or white space in them, lines ended by CRLF, LF or a lone CR,
    the blank line or none at the end; and so with every name read as a
    long one (searched for in the header, its blanks looked at a few octets
    a slice: fetch._SHORT_NAME lowered), and for more fields of several
    names than are sorted at once (merged as they are gone through)."""
    import random

    from mailyard.protocols.imap import fetch
    from mailyard.protocols.imap.fetch import ParsedHeader, field_names

    monkeypatch.setattr(fetch, "_SHORT_NAME", short_name)
    rnd = random.Random(5322)
    pieces = [b"From", b"to", b"X-A", b"x-a", b"B", b"a", b":", b": v", b" ", b"\t", b"\r", b"\n", b"\r\n",
              b"\r\n", b"\r\n ", b"\n\t", b"\x0b", b"\x0c", b"\xe9", b"::", b"   ", b" \t "]
    choices = [["from", "TO"], ["x-a"], ["B", "a", "x-A"], ["nothing"], [], ["a", "to", "from", "b", "x-a"]]
    every = field_names(n for names in [*choices, ["c"]] for n in names)

    def check(data: bytes, start: int, end: int, most: int, names_of: list[list[str]]) -> None:
        header = data[start:end]
        sliced = ParsedHeader(data, every, whole=False, start=start, end=end)
        while not sliced.done:
            sliced.cut(rnd.randrange(0, most), rnd.choice([0, 1, 5]))
        for names in names_of:
            whole = ParsedHeader(header, field_names(names))
            assert [start + i for i in whole.starts] == list(sliced.starts)
            for exclude in (False, True):
                want = _reference_select(header, names, exclude)
                assert whole.select(names, exclude) == want, (header, names, exclude)
                chosen = sliced.selection(names, exclude)
                while not chosen.done:
                    chosen.advance(rnd.randrange(0, most), rnd.choice([0, 1, 5]))
                assert chosen.data() == want, (header, names, exclude)

    for _ in range(1500):
        around = [b"".join(rnd.choice(pieces) for _ in range(rnd.randrange(0, n))) for n in (3, 40, 3)]
        check(b"".join(around), len(around[0]), len(around[0]) + len(around[1]), 12, choices)
    merged = []
    for _ in range(3):
        header = b"".join(rnd.choices([b"A:1\r\n", b"B:2\r\n", b"c :3\r\n", b"no name\r\n", b" fold\r\n", b"a:x\n",
                                       b"b\r", b"X-A:" + b"v" * 70_000 + b"\r\n"], [1] * 7 + [0.01], k=12_000))
        check(header, 0, len(header), 50_000, [["a", "b"], ["A", "B", "C", "x-a"], ["x-a", "from"]])
        merged.append(ParsedHeader(header, every).selection(["a", "b"], True).merged)
    assert min(merged) == 3  # a, b and the lines without a name: heapq.merge


def test_each_header_fields_item_is_charged_as_the_whole_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """A HEADER.FIELDS (.NOT) item may output the whole header: a hundred
    HEADER.FIELDS (X) of a 190 KB header of X: fields are 19 MB of output,
    written item by item (no more than FETCH_BATCH_OCTETS, here 256 KiB,
    and an item queued at once), not as one line; and a batch holds one
    message that two such items of its 95 KB header make 190 KB."""
    from mailyard.protocols.imap.handlers import messages

    monkeypatch.setattr(messages, "FETCH_BATCH_OCTETS", 256 * 1024)
    hdr = b"".join(b"X: %s\r\n" % (b"y" * 90) for _ in range(2000))
    big = hdr + b"Subject: big\r\n\r\nbody\r\n"
    c = connect(store_with_mail(big, big), select="INBOX")
    most = _most_pending(monkeypatch)
    for text in ("HEADER.FIELDS (X)", "HEADER.FIELDS.NOT (Subject)"):
        most[0] = 0
        out = c.send("a1 FETCH 1 (" + " ".join([f"BODY.PEEK[{text}]"] * 100) + ")")
        item = b"BODY[%s] {%d}\r\n%s\r\n" % (text.encode(), len(hdr) + 2, hdr)
        assert out == b"* 1 FETCH (" + b" ".join([item] * 100) + b")\r\na1 OK FETCH completed\r\n"
        assert most[0] <= 256 * 1024 + len(item), most[0]
    # two items of 95 KB each of two messages: one message a batch
    half = hdr[: len(hdr) // 2] + b"\r\n"
    c = connect(store_with_mail(half, half), select="INBOX")
    paused = c.conv.paused
    out = c.send("a2 FETCH 1:2 (" + " ".join(["BODY.PEEK[HEADER.FIELDS (X)]"] * 2) + ")")
    assert out.count(b" FETCH (") == 2 and out.endswith(b"a2 OK FETCH completed\r\n")
    assert c.conv.paused == paused + 1


def _short_fields(n: int, seed: int = 0) -> list[bytes]:
    """``n`` fields of a few octets: X-A with a digit, and B with nothing."""
    return [b"X-A:%d\r\n" % ((i + seed) % 10) if i % 2 else b"B:\r\n" for i in range(n)]


@pytest.mark.parametrize("octets", [None, 256 * 1024], ids=["one-line", "item-by-item"])
def test_a_header_of_many_fields_is_cut_and_selected_between_turns(
        monkeypatch: pytest.MonkeyPatch, octets: int | None) -> None:
    """A header of 200,000 short fields (1.1 MB) takes the better part of a
    second to cut into fields and select from: the FETCH lets the other
    connections in between slices of that work (about FETCH_TURN each, here
    some 50 of them), whether its response is one line or written item by
    item (a batch's octets, FETCH_BATCH_OCTETS, lowered to 256 KiB), and
    its items are what RFC 9051 6.4.5 says, byte for byte."""
    from mailyard.protocols.imap.handlers import messages

    if octets is not None:
        monkeypatch.setattr(messages, "FETCH_BATCH_OCTETS", octets)
    head = b"From: bob@example.test\r\nSubject: many\r\n"
    fields = _short_fields(200_000)
    c = connect(store_with_mail(head + b"".join(fields) + b"\r\nbody\r\n"), select="INBOX")
    paused = c.conv.paused
    out = c.send("a1 FETCH 1 (BODY.PEEK[HEADER.FIELDS (X-A)] BODY.PEEK[HEADER.FIELDS.NOT (x-a)] "
                 "BODY.PEEK[HEADER.FIELDS (Subject)])")
    taken = b"".join(f for f in fields if f.startswith(b"X-A:")) + b"\r\n"
    left = head + b"".join(f for f in fields if f == b"B:\r\n") + b"\r\n"
    assert out == (b"* 1 FETCH (BODY[HEADER.FIELDS (X-A)] {%d}\r\n%s BODY[HEADER.FIELDS.NOT (x-a)] {%d}\r\n%s "
                   b"BODY[HEADER.FIELDS (Subject)] {17}\r\nSubject: many\r\n\r\n)\r\na1 OK FETCH completed\r\n"
                   % (len(taken), taken, len(left), left))
    # 200,000 lines cut (a unit each), 200,000 fields selected (a quarter)
    assert c.conv.paused - paused >= 40, c.conv.paused - paused


def test_the_headers_of_a_batch_are_cut_between_turns() -> None:
    """Twenty messages whose headers hold 10,000 short fields each (55 KB,
    so that one batch holds them all, FETCH_BATCH_OCTETS): their cutting
    and selecting is charged as it is done, and the other connections get
    their turn whenever it passes FETCH_TURN, not only between batches; the
    items are exact."""
    messages = [b"Subject: m%d\r\n" % n + b"".join(_short_fields(10_000, n)) + b"\r\nbody\r\n" for n in range(20)]
    c = connect(store_with_mail(*messages), select="INBOX")
    paused = c.conv.paused
    lines = c.send("a1 FETCH 1:* (BODY.PEEK[HEADER.FIELDS (X-A)])")
    want = b""
    for n in range(20):
        taken = b"".join(f for f in _short_fields(10_000, n) if f.startswith(b"X-A:")) + b"\r\n"
        want += b"* %d FETCH (BODY[HEADER.FIELDS (X-A)] {%d}\r\n%s)\r\n" % (n + 1, len(taken), taken)
    assert lines == want + b"a1 OK FETCH completed\r\n"
    # 200,000 lines and 100,000 fields selected: some 45 turns
    assert c.conv.paused - paused >= 30, c.conv.paused - paused


_LONG_LINES = {
    # a name, 20 MB of blanks and the colon: a field named X-A
    "blanks": b"X-A" + b" \t" * 10_000_000 + b": v\r\n",
    # 20 MB of words and blanks before the colon: a line without a field name
    "words": b"a " * 10_000_000 + b":\r\n",
    # 2,000 fields of 10 KB
    "10KB-lines": b"".join(b"X-%04d: %s\r\n" % (i, b"v" * 10_000) for i in range(2000)),
}


@pytest.mark.parametrize("shape", list(_LONG_LINES))
def test_a_header_of_long_lines_is_cut_between_turns(shape: str) -> None:
    """A header of 20 MB in a line or in 2,000 (RFC 5322 2.1.1 allows a
    client no such thing, but a message is stored as it came): searching
    its octets is what costs, so the header is cut a few megabytes at a
    time with the other connections' turns in between (FETCH_TURN, charged
    by octets as well as lines), and the items are exact (RFC 9051 6.4.5:
    HEADER.FIELDS.NOT leaves out the lines without a field name)."""
    head = b"From: bob@example.test\r\nSubject: long\r\n"
    long = _LONG_LINES[shape]
    c = connect(store_with_mail(head + long + b"\r\nbody\r\n"), select="INBOX")
    paused = c.conv.paused
    out = c.send("a1 FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject X-0007)] BODY.PEEK[HEADER.FIELDS.NOT (X-A X-0008)])")
    taken = b"Subject: long\r\n" + (b"X-0007: %s\r\n" % (b"v" * 10_000) if shape == "10KB-lines" else b"") + b"\r\n"
    left = head + (long.replace(b"X-0008: %s\r\n" % (b"v" * 10_000), b"") if shape == "10KB-lines" else b"") + b"\r\n"
    assert out == (b"* 1 FETCH (BODY[HEADER.FIELDS (Subject X-0007)] {%d}\r\n%s "
                   b"BODY[HEADER.FIELDS.NOT (X-A X-0008)] {%d}\r\n%s)\r\na1 OK FETCH completed\r\n"
                   % (len(taken), taken, len(left), left))
    # 20 MB searched: a few slices (a line of words is searched to its
    # first blank, and charged as a whole once cut: one turn after it)
    assert c.conv.paused - paused >= (1 if shape == "words" else 3), c.conv.paused - paused


def test_a_header_of_distinct_names_is_indexed_by_the_names_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A header of 300,000 fields of distinct names: the header is cut for
    the names the FETCH asks (all of its items at once), so its index holds
    those and the lines without a name, however many names the header has
    (no dictionary of 300,000 names, their cost and memory); the cutting
    lets the other connections in between slices, and the items are exact
    (RFC 9051 6.4.5; names are case-insensitive, RFC 5322 1.2.2)."""
    from mailyard.protocols.imap import fetch

    made: list[fetch.ParsedHeader] = []

    class Kept(fetch.ParsedHeader):
        __slots__ = ()

        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            made.append(self)

    monkeypatch.setattr(fetch, "ParsedHeader", Kept)
    fields = [b"N-%d:\r\n" % i for i in range(300_000)]
    head = b"Subject: names\r\n"
    c = connect(store_with_mail(head + b"".join(fields) + b"no name\r\n\r\nbody\r\n"), select="INBOX")
    paused = c.conv.paused
    out = c.send("a1 FETCH 1 (BODY.PEEK[HEADER.FIELDS (n-7 N-299999 subject)] BODY.PEEK[HEADER.FIELDS.NOT (n-1)])")
    taken = b"Subject: names\r\nN-7:\r\nN-299999:\r\n\r\n"
    left = head + fields[0] + b"".join(fields[2:]) + b"\r\n"
    assert out == (b"* 1 FETCH (BODY[HEADER.FIELDS (n-7 N-299999 subject)] {%d}\r\n%s "
                   b"BODY[HEADER.FIELDS.NOT (n-1)] {%d}\r\n%s)\r\na1 OK FETCH completed\r\n"
                   % (len(taken), taken, len(left), left))
    assert len(made) == 1
    assert sorted(made[0].by_name, key=str) == [None, b"n-1", b"n-299999", b"n-7", b"subject"]
    assert c.conv.paused - paused >= 50, c.conv.paused - paused  # 300,000 lines, a unit each


def test_the_fields_of_many_names_in_header_order_are_charged_by_their_number() -> None:
    """HEADER.FIELDS of 1,000 names (MAX_FETCH_FIELD_NAMES) from a header of
    200,000 fields of them: the fields are taken in header order by merging
    each name's (heapq.merge), a comparison more for each doubling of the
    names, and charged so (fetch_plan.MERGED_FIELD_WORK): the other
    connections get their turns at that rate, and the item is exact."""
    names = [f"N{i}" for i in range(1000)]
    fields = [b"N%d:\r\n" % (i % 1000) for i in range(200_000)]
    c = connect(store_with_mail(b"".join(fields) + b"\r\nbody\r\n"), select="INBOX")
    paused = c.conv.paused
    out = c.send(f"a1 FETCH 1 (BODY.PEEK[HEADER.FIELDS ({' '.join(names)})])")
    taken = b"".join(fields) + b"\r\n"
    assert out == b"* 1 FETCH (BODY[HEADER.FIELDS (%s)] {%d}\r\n%s)\r\na1 OK FETCH completed\r\n" % (
        " ".join(names).encode(), len(taken), taken)
    # 200,000 lines cut (40 turns), 200,000 fields merged from 1,000 lists,
    # (0.3 + 0.05 * log2(1000)) = 0.8 units each (32 turns; at a flat 0.25,
    # 10)
    assert c.conv.paused - paused >= 65, c.conv.paused - paused


def test_a_header_of_distinct_names_keeps_no_index_of_them() -> None:
    """fetch.ParsedHeader of a header of 100,000 distinct names, cut for two
    of them, keeps where each field starts (4 octets a field) and the two
    names' fields, not a dictionary of every name nor each name in lower
    case (some 300 octets a field)."""
    import tracemalloc

    from mailyard.protocols.imap.fetch import ParsedHeader

    header = b"".join(b"X-Name-%d:\r\n" % i for i in range(100_000)) + b"\r\n"
    tracemalloc.start()
    try:
        parsed = ParsedHeader(header, frozenset([b"x-name-5", b"x-name-75000"]))
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept < 8 * 100_000, kept
    assert parsed.select(["X-Name-75000", "x-name-5"], False) == b"X-Name-5:\r\nX-Name-75000:\r\n\r\n"


def test_a_fetch_of_too_many_items_is_refused_rfc5530_limit() -> None:
    """At most MAX_FETCH_ATTS items and MAX_FETCH_FIELD_NAMES header field
    names in one FETCH: more is answered NO [LIMIT] before any work."""
    c = connect(select="INBOX")
    many = " ".join(["UID"] * 101)
    c.expect(f"a1 FETCH 1:* ({many})", "a1 NO [LIMIT] At most 100 items in one FETCH")
    c.expect(f"a2 UID FETCH 1:* ({many})", "a2 NO [LIMIT] At most 100 items in one FETCH")
    names = " ".join(f"X-{i}" for i in range(1001))
    c.expect(f"a3 FETCH 1 (BODY.PEEK[HEADER.FIELDS ({names})])",
             "a3 NO [LIMIT] At most 1000 header field names in one FETCH")
    assert c.untagged("a4 FETCH 1 (" + " ".join(["UID"] * 100) + ")")


def test_binary_of_base64_ignores_what_is_not_the_alphabet_rfc2045_6_8() -> None:
    """Line breaks, spaces and stray characters in base64 are skipped and a
    missing padding is no error (RFC 2045 6.8); the octets come back whole."""
    header = b"Content-Transfer-Encoding: base64\r\n\r\n"
    assert decode_cte(b"AAEC\r\nAwQ=\r\n", header) == b"\x00\x01\x02\x03\x04"
    assert decode_cte(b"AA EC\tAw*Q\r\n", header) == b"\x00\x01\x02\x03\x04"  # no padding
    assert decode_cte(b"AAECAwQ=\r\ntrailing", header) == b"\x00\x01\x02\x03\x04"
    data = bytes(range(256)) * 4096
    assert decode_cte(base64.encodebytes(data).replace(b"\n", b"\r\n"), header) == data


# --- section numbers inside MESSAGE/RFC822 (RFC 9051 6.4.5) ----------------------

INNER = b"From: b@y.example\r\nSubject: inner\r\n\r\ninner body\r\n"
TOP_HEADER = b"From: a@x.example\r\nSubject: outer\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n"
# a message whose whole body is a MESSAGE/RFC822: its part 1 is the encapsulated message
TOP_RFC822 = TOP_HEADER + INNER
LVL2 = b"From: m2@x.example\r\nSubject: lvl2\r\n\r\ndeep body"
LVL1_HEADER = b"From: m1@x.example\r\nSubject: lvl1\r\nContent-Type: message/rfc822\r\n\r\n"
# part 2 is a MESSAGE/RFC822 whose encapsulated message is itself a MESSAGE/RFC822
NESTED_TWICE = (
    b"From: a@x.example\r\nSubject: twice\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n'
    b"--o\r\nContent-Type: text/plain\r\n\r\none\r\n"
    b"--o\r\nContent-Type: message/rfc822\r\n\r\n" + LVL1_HEADER + LVL2 + b"\r\n--o--\r\n"
)


def test_sections_of_a_message_whose_body_is_a_message_rfc9051_6_4_5() -> None:
    """The body of a non-multipart message is its part 1; when that body is a
    MESSAGE/RFC822, 1.HEADER/1.TEXT are the encapsulated message's, and its
    own body (not multipart) is 1.1. TEXT is the whole encapsulated message.
    The same answers as Dovecot 2.3."""
    c = connect(store_with_mail(TOP_RFC822), select="INBOX")
    c.expect(
        "a1 FETCH 1 (BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[1.HEADER] BODY.PEEK[1.TEXT] BODY.PEEK[1.1] "
        "BODY.PEEK[1.1.MIME] BODY.PEEK[TEXT] BODY.PEEK[HEADER] BODY.PEEK[1.2] BODY.PEEK[2])",
        "* 1 FETCH (BODY[1] " + lit(INNER) + " BODY[1.MIME] " + lit(TOP_HEADER)
        + " BODY[1.HEADER] " + lit(b"From: b@y.example\r\nSubject: inner\r\n\r\n")
        + " BODY[1.TEXT] " + lit(b"inner body\r\n") + " BODY[1.1] " + lit(b"inner body\r\n")
        + " BODY[1.1.MIME] " + lit(b"From: b@y.example\r\nSubject: inner\r\n\r\n")
        + " BODY[TEXT] " + lit(INNER) + " BODY[HEADER] " + lit(TOP_HEADER)
        + " BODY[1.2] {0}\r\n BODY[2] {0}\r\n)",
        "a1 OK FETCH completed",
    )


def test_sections_of_a_message_part_nested_twice_rfc9051_6_4_5() -> None:
    c = connect(store_with_mail(NESTED_TWICE), select="INBOX")
    c.expect(
        "a1 FETCH 1 (BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT] BODY.PEEK[2.1] BODY.PEEK[2.1.MIME] "
        "BODY.PEEK[2.1.HEADER] BODY.PEEK[2.1.TEXT] BODY.PEEK[2.1.1] BODY.PEEK[2.1.1.MIME] BODY.PEEK[2.MIME])",
        "* 1 FETCH (BODY[2.HEADER] " + lit(LVL1_HEADER) + " BODY[2.TEXT] " + lit(LVL2)
        + " BODY[2.1] " + lit(LVL2) + " BODY[2.1.MIME] " + lit(LVL1_HEADER)
        + " BODY[2.1.HEADER] " + lit(b"From: m2@x.example\r\nSubject: lvl2\r\n\r\n")
        + " BODY[2.1.TEXT] " + lit(b"deep body") + " BODY[2.1.1] " + lit(b"deep body")
        + " BODY[2.1.1.MIME] " + lit(b"From: m2@x.example\r\nSubject: lvl2\r\n\r\n")
        + " BODY[2.MIME] " + lit(b"Content-Type: message/rfc822\r\n\r\n") + ")",
        "a1 OK FETCH completed",
    )


QP_PART = b"trailing spaces   \r\nsoft break= \t\r\ncontinued\tand tab\t\r\nend=3D"
QP_MESSAGE = (
    b"From: a@x.example\r\nSubject: qp\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n'
    b"--o\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    + QP_PART + b"\r\n--o--\r\n"
)


def test_binary_of_quoted_printable_drops_trailing_space_rfc2045_6_7() -> None:
    """RFC 2045 6.7 rule 3 (whitespace ending an encoded line is removed) and
    rule 5 ("=" then whitespace is a soft line break); BINARY.SIZE and the
    partial range count the decoded octets (RFC 3516 4.2). As Dovecot 2.3."""
    decoded = b"trailing spaces\r\nsoft breakcontinued\tand tab\r\nend="
    c = connect(store_with_mail(QP_MESSAGE), select="INBOX")
    c.expect(
        "a1 FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1] BINARY.PEEK[1]<10.20> BINARY.PEEK[1]<45.10>)",
        "* 1 FETCH (BINARY[1] " + lit(decoded) + f" BINARY.SIZE[1] {len(decoded)}"
        " BINARY[1]<10> " + lit(decoded[10:30]) + " BINARY[1]<45> " + lit(decoded[45:]) + ")",
        "a1 OK FETCH completed",
    )


ADDRESSES = (
    b"From: <user-from (comment)@ (comment) domain.org>\r\nTo: user@domain.example (Real Name)\r\n"
    b'Cc: "Quoted" <q@d.example>, plain@d.example (Comment Name), x@y.example (a) (b)\r\n'
    b"Subject: addr\r\n\r\nbody\r\n"
)


def test_envelope_name_from_the_comment_form_rfc5322_3_4() -> None:
    """``user@domain (Real Name)``: the comment is the personal name (the last
    one if several), as Dovecot and Cyrus give it; comments inside an
    angle-addr name nobody."""
    c = connect(store_with_mail(ADDRESSES), select="INBOX")
    c.expect(
        "a1 FETCH 1 ENVELOPE",
        '* 1 FETCH (ENVELOPE (NIL "addr" ((NIL NIL "user-from" "domain.org")) ((NIL NIL "user-from" "domain.org"))'
        ' ((NIL NIL "user-from" "domain.org")) (("Real Name" NIL "user" "domain.example"))'
        ' (("Quoted" NIL "q" "d.example")("Comment Name" NIL "plain" "d.example")("b" NIL "x" "y.example"))'
        " NIL NIL NIL))",
        "a1 OK FETCH completed",
    )


def test_quoted_printable_strips_line_end_whitespace_as_rfc_2045_says() -> None:
    # RFC 2045 6.7 rule 3, spelled out as a regex: the reference
    import binascii
    import random
    import re

    from mailyard.protocols.imap.fetch import decode_quoted_printable

    trailing = re.compile(rb"[ \t]+(?=\r?\n|\Z)")
    rng = random.Random(11)
    for _ in range(20000):
        data = bytes(rng.choice(b" \t\r\n=aF3") for _ in range(rng.randint(0, 24)))
        assert decode_quoted_printable(data) == binascii.a2b_qp(trailing.sub(b"", data)), data


def test_quoted_printable_takes_linear_time_on_long_runs_of_blanks() -> None:
    # a run of blanks that does not end a line: quadratic for a regex with a
    # lookahead (23 s at 40,000); any sender can put one in a message
    import time

    from mailyard.protocols.imap.fetch import decode_quoted_printable

    started = time.process_time()
    assert decode_quoted_printable(b" " * 2_000_000 + b"x=41 \r\n") == b" " * 2_000_000 + b"xA\r\n"
    assert time.process_time() - started < 2.0


def test_a_header_cut_for_other_names_keeps_the_names_asked_before() -> None:
    """Sections asking alternately for different field names (APPEND
    CATENATE URLs of one message) cut the header once per new name set,
    not once per section."""
    from mailyard.protocols.imap.fetch import field_names
    from mailyard.protocols.imap.fetch_plan import MessageParts

    raw = b"Subject: s\r\nFrom: f\r\nTo: t\r\n\r\nbody\r\n"
    parts = MessageParts(raw, None)
    rng = (0, raw.index(b"\r\n\r\n") + 4)
    first = parts.parsed_header(rng, field_names(["Subject"]))
    second = parts.parsed_header(rng, field_names(["From"]))
    assert second is not first
    assert parts.parsed_header(rng, field_names(["Subject"])) is second
    assert parts.parsed_header(rng, field_names(["From", "Subject"])) is second
