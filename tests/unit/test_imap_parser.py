"""The IMAP command grammar (RFC 9051 section 9) and response serialisation."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.protocols.contract import NEED_DATA
from mailyard.protocols.imap import commands as c
from mailyard.protocols.imap import names, utf7
from mailyard.protocols.imap.engine import ImapEngine
from mailyard.protocols.imap.parser import ParseError, TagError, parse_command
from mailyard.protocols.imap.response import Atom, Literal8, Mailbox, Writer, format_uid_set


def parse(line: bytes, *literals: bytes, utf8: bool = False) -> c.Command:
    segments = line.split(b"\r\n")
    return parse_command(segments, list(literals), utf8)


def test_simple_commands() -> None:
    for name in ("CAPABILITY", "noop", "Logout", "IDLE", "UNSELECT", "NAMESPACE", "CHECK"):
        cmd = parse(b"a1 " + name.encode())
        assert isinstance(cmd, c.Simple) and cmd.name == name.upper() and cmd.tag == "a1"


def test_tags() -> None:
    assert parse(b"]x] NOOP").tag == "]x]"
    for bad in (b"+a NOOP", b"a{ NOOP", b" NOOP", b"a*b NOOP"):
        with pytest.raises(TagError):
            parse(bad)


def test_login_astrings_quoted_and_literal() -> None:
    cmd = parse(b'a LOGIN "fred \\"x\\"" {3}\r\n', b"p w")
    assert isinstance(cmd, c.Login)
    assert (cmd.userid, cmd.password) == ('fred "x"', "p w")
    cmd = parse(b"a LOGIN {4+}\r\n x", b"fred")
    assert (cmd.userid, cmd.password) == ("fred", "x")


@pytest.mark.parametrize(
    "line",
    [b"a LOGIN fred", b"a LOGIN  fred x", b"a LOGIN fred x ", b"a login fred \"x", b"a FOO", b"a UID NOOP",
     b"a EXPUNGE 1", b"a UID EXPUNGE"],
)
def test_syntax_errors(line: bytes) -> None:
    with pytest.raises(ParseError):
        parse(line)


def test_sequence_sets() -> None:
    cmd = parse(b"a FETCH 2,4:7,9,12:*,*:4 FLAGS")
    assert isinstance(cmd, c.Fetch)
    s = cmd.sequence_set
    assert s.ranges == ((2, 2), (4, 7), (9, 9), (12, None), (None, 4))
    assert list(s.resolve(15))[-1] == (4, 15)
    assert s.contains(13, 15) and s.contains(3, 3)
    assert parse(b"a UID FETCH $ UID").sequence_set.saved
    with pytest.raises(ParseError):
        parse(b"a FETCH 0 FLAGS")
    with pytest.raises(ParseError):
        parse(b"a FETCH 1, FLAGS")


def test_fetch_attributes() -> None:
    cmd = parse(b"a FETCH 1 (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (From to)]<0.100> BINARY[3] BINARY.SIZE[3] MODSEQ)")
    atts = cmd.atts
    assert atts[0] == c.FetchAtt("FLAGS")
    b = atts[1]
    assert b.name == "BODY[]" and b.peek and b.partial == (0, 100)
    assert b.section == c.Section((1, 2), "HEADER.FIELDS", ("From", "to"))
    assert b.section_text == "1.2.HEADER.FIELDS (From to)"
    assert atts[2].name == "BINARY[]" and atts[2].section == c.Section((3,))
    assert atts[3].name == "BINARY.SIZE[]"
    assert atts[4].name == "MODSEQ"
    assert parse(b"a FETCH 1 body[]").atts[0].section == c.Section()
    assert parse(b"a FETCH 1 BODY[2.MIME]").atts[0].section == c.Section((2,), "MIME")
    assert parse(b"a FETCH 1 BODY[TEXT]<5.10>").atts[0].partial == (5, 10)
    assert [a.name for a in parse(b"a FETCH 1:* FULL").atts] == [
        "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"]
    assert parse(b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)").vanished
    for bad in (b"a FETCH 1 BODY[MIME]", b"a FETCH 1 BODY[1.2.FOO]", b"a FETCH 1 FOO",
                b"a FETCH 1 BODY[]<0.0>", b"a FETCH 1 (FLAGS", b"a FETCH 1 BODY[HEADER.FIELDS ()]"):
        with pytest.raises(ParseError):
            parse(bad)


def test_search_program() -> None:
    cmd = parse(b'a UID SEARCH RETURN (MIN COUNT) CHARSET UTF-8 OR FROM "x y" (UNSEEN LARGER 3) 1:3 UID 4,5 '
                b"BEFORE 1-Feb-2020 HEADER X-Foo \"\" NOT KEYWORD $Junk MODSEQ 5 SENTON \"03-Mar-2021\"")
    assert isinstance(cmd, c.Search) and cmd.uid
    assert cmd.charset == "UTF-8" and cmd.return_opts == ("MIN", "COUNT")
    k = cmd.key
    assert k.name == "AND"
    names = [x.name for x in k.args]
    assert names == ["OR", "SEQ", "UID", "BEFORE", "HEADER", "NOT", "MODSEQ", "SENTON"]
    assert k.args[3].args[0] == dt.date(2020, 2, 1)
    assert k.args[0].args[1].args[0].name == "NOT"  # UNSEEN -> NOT FLAG \Seen
    assert parse(b"a SEARCH RETURN () ALL").return_opts == ("ALL",)
    assert parse(b"a SEARCH ALL").return_opts is None
    lit = parse(b"a SEARCH CHARSET UTF-8 SUBJECT {6}\r\n", "débâ".encode()[:6])
    assert lit.key.args[0] == "débâ"[:4] or isinstance(lit.key.args[0], str)
    for bad in (b"a SEARCH", b"a SEARCH FOO", b"a SEARCH BEFORE 1-Foo-2020", b"a SEARCH (ALL",
                b"a SEARCH RETURN (BOGUS) ALL", b"a SEARCH " + b"NOT " * 60 + b"ALL"):
        with pytest.raises(ParseError):
            parse(bad)


def test_store_and_copy() -> None:
    cmd = parse(b"a STORE 2:4 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted $Label)")
    assert isinstance(cmd, c.Store)
    assert (cmd.mode, cmd.silent, cmd.flags, cmd.unchanged_since) == ("add", True, ("\\Deleted", "$Label"), 320162338)
    cmd = parse(b"a UID STORE 1 -FLAGS \\Seen \\Flagged")
    assert cmd.uid and cmd.mode == "remove" and cmd.flags == ("\\Seen", "\\Flagged")
    cmd = parse(b"a UID MOVE 1:3 Trash")
    assert isinstance(cmd, c.Copy) and cmd.move and cmd.mailbox == "Trash"
    cmd = parse(b"a UID EXPUNGE 3:5")
    assert isinstance(cmd, c.UidExpunge) and cmd.uid


def test_append_and_multiappend() -> None:
    cmd = parse(b'a APPEND saved-messages (\\Seen) " 7-Feb-1994 21:52:25 -0800" {5}\r\n (\\Draft) ~{3}\r\n',
                b"hello", b"\x00ab")
    assert isinstance(cmd, c.Append)
    m1, m2 = cmd.messages
    assert m1.data == b"hello" and m1.flags == ("\\Seen",)
    assert m1.internal_date == dt.datetime(1994, 2, 8, 5, 52, 25, tzinfo=dt.UTC).timestamp()
    assert m2.binary and m2.data == b"\x00ab"
    with pytest.raises(ParseError):
        parse(b"a APPEND INBOX")


def test_mailbox_names_modified_utf7_and_inbox() -> None:
    assert parse(b"a SELECT inbox").mailbox == "INBOX"
    assert parse(b"a CREATE Inbox/sub").mailbox == "INBOX/sub"
    assert parse(b"a CREATE ~peter/mail/&U,BTFw-/&ZeVnLIqe-").mailbox == "~peter/mail/台北/日本語"
    assert parse("a CREATE 台北".encode(), utf8=True).mailbox == "台北"
    assert parse(b"a CREATE A&-B", utf8=True).mailbox == "A&-B"
    # a valid astring, not valid modified UTF-7: no syntax error, a name no mailbox has
    bad = parse(b"a CREATE &Jjo!").mailbox
    assert bad == names.undecodable("&Jjo!") and names.name_problem(bad) == "mailbox name is not valid modified UTF-7"
    assert utf7.encode("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert utf7.decode(utf7.encode("a&b€")) == "a&b€"


def test_list_extended() -> None:
    cmd = parse(b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" "%/x") RETURN (CHILDREN STATUS (MESSAGES UNSEEN))')
    assert isinstance(cmd, c.List) and cmd.extended
    assert cmd.select_opts == ("SUBSCRIBED", "RECURSIVEMATCH")
    assert cmd.patterns == ("INBOX", "%/x")
    assert cmd.return_opts == ("CHILDREN", "STATUS") and cmd.status_items == ("MESSAGES", "UNSEEN")
    cmd = parse(b'a LIST "" *')
    assert not cmd.extended and cmd.patterns == ("*",)
    assert parse(b"a LSUB \"#news.\" comp.%").lsub


def test_select_qresync_and_misc() -> None:
    cmd = parse(b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))")
    assert cmd.qresync.uid_validity == 67890007 and cmd.qresync.modseq == 20050715194045000
    cmd = parse(b"B04 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000,9990:9999 15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997)))")
    assert cmd.qresync.seq_match is not None
    assert parse(b"a EXAMINE x (CONDSTORE)").condstore
    assert parse(b'a ID ("name" "sodr" "version" NIL)').params == {"name": "sodr", "version": None}
    assert parse(b"a ID NIL").params is None
    assert parse(b"a ENABLE utf8=accept condstore").capabilities == ("UTF8=ACCEPT", "CONDSTORE")
    assert parse(b"a AUTHENTICATE plain AGJvYgBw").initial_response == b"AGJvYgBw"
    assert parse(b"a STATUS blurdybloop (UIDNEXT MESSAGES)").items == ("UIDNEXT", "MESSAGES")
    assert parse(b"a CREATE x (USE (\\Drafts))").special_use == ("\\Drafts",)
    assert parse(b"a RENAME blurdybloop sarasoop").new == "sarasoop"


def test_writer() -> None:
    w = Writer()
    assert w.line(Atom("FLAGS"), [Atom("\\Seen"), Atom("$x")]) == b"FLAGS (\\Seen $x)\r\n"
    assert w.value(None) == b"NIL"
    assert w.value('a"b\\') == b'"a\\"b\\\\"'
    assert w.value("l\r\nx") == b"{4}\r\nl\r\nx"
    assert w.value("héllo") == b"{6}\r\nh\xc3\xa9llo"
    assert w.value(b"raw") == b"{3}\r\nraw"
    assert w.value(Literal8(b"\x00")) == b"~{1}\r\n\x00"
    assert w.value(Mailbox("台北")) == b'"&U,BTFw-"'
    assert Writer(utf8=True).value(Mailbox("台北")) == '"台北"'.encode()
    assert Writer(utf8=True).value("héllo") == '"héllo"'.encode()
    assert format_uid_set([5, 1, 2, 3, 9]) == "1:3,5,9"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_parser_never_raises_on_garbage(data: bytes) -> None:
    """Arbitrary bytes produce responses (BAD/continuations), never an exception."""
    e = ImapEngine()
    e.state = e.state.AUTHENTICATED
    e.receive_data(data + b"\r\n")
    for _ in range(50):
        ev = e.next_event()
        if ev is NEED_DATA or e.closed:
            break
        e.complete("OK", "done")
    e.data_to_send()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"1", b" ", b"(", b")", b"[", b"]", b"<", b">", b".", b"*", b":", b",",
                                  b'"', b"\\", b"{", b"}", b"+", b"NIL", b"FETCH ", b"BODY", b"SEARCH ", b"UID ",
                                  b"HEADER", b"FLAGS", b"OR ", b"NOT ", b"~", b"\x80", b"\x00"]), max_size=40))
def test_parser_grammar_fuzz(parts: list[bytes]) -> None:
    line = b"t " + b"".join(parts)
    try:
        parse(line.replace(b"\r\n", b""))
    except ParseError:
        pass


def test_fetch_att_lists_are_memoised_by_the_rest_of_the_line() -> None:
    """A repeated fetch-att list is parsed once (parser._ATTS_MEMO); the
    sequence set, the modifiers and syntax errors still come from each line."""
    from mailyard.protocols.imap import parser

    parser._ATTS_MEMO.clear()
    first = parse_command([b"a1 FETCH 5 (UID BODY.PEEK[HEADER.FIELDS (Subject)]<0.100>)"], [])
    again = parse_command([b"a2 FETCH 7:9,12 (UID BODY.PEEK[HEADER.FIELDS (Subject)]<0.100>)"], [])
    assert isinstance(first, c.Fetch) and isinstance(again, c.Fetch)
    assert again.atts is first.atts  # one parse, shared (FetchAtt is frozen)
    assert again.sequence_set.ranges == ((7, 9), (12, 12))
    assert first.atts[1].section == c.Section((), "HEADER.FIELDS", ("Subject",))
    assert first.atts[1].partial == (0, 100)
    # the modifier after the list is parsed per command, not taken from the memo
    mod = parse_command([b"a3 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 41)"], [])
    mod2 = parse_command([b"a4 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 42)"], [])
    assert isinstance(mod, c.Fetch) and isinstance(mod2, c.Fetch)
    assert (mod.changed_since, mod2.changed_since) == (41, 42)
    # an error is never remembered as a result
    for _ in range(2):
        with pytest.raises(ParseError):
            parse_command([b"a5 FETCH 1 (FLAGS BODY[TEXT)"], [])
    # a list with a literal (several segments) is parsed in full, not memoised
    lit = parse_command([b"a6 FETCH 1 (BODY.PEEK[HEADER.FIELDS ({7}", b")])"], [b"Subject"])
    assert isinstance(lit, c.Fetch) and lit.atts[0].section == c.Section((), "HEADER.FIELDS", ("Subject",))
    # long lines are parsed, not remembered (memory bound)
    fields = b" ".join(b"X-Field-%d" % i for i in range(40))
    parser._ATTS_MEMO.clear()
    long = parse_command([b"a7 FETCH 1 (BODY.PEEK[HEADER.FIELDS (" + fields + b")])"], [])
    assert isinstance(long, c.Fetch) and len(long.atts[0].section.fields) == 40
    assert not parser._ATTS_MEMO
    # bounded
    for n in range(parser._ATTS_MEMO_SIZE + 10):
        parse_command([b"t FETCH 1 (BODY.PEEK[]<%d.10>)" % n], [])
    assert len(parser._ATTS_MEMO) <= parser._ATTS_MEMO_SIZE


def test_engine_output_is_counted_and_handed_over_once() -> None:
    eng = ImapEngine()
    eng.greeting("hi")
    eng.untagged(Atom("OK"))
    assert eng.pending == len(b"* OK hi\r\n* OK\r\n")
    assert eng.data_to_send() == b"* OK hi\r\n* OK\r\n"
    assert eng.pending == 0 and eng.data_to_send() == b""


def _reference_match(reference: str, pattern: str, name: str) -> bool:
    """RFC 9051 6.3.9 spelled out as a regex, the reference of the differential test."""
    import re

    full = reference + pattern
    body = "".join(".*" if ch == "*" else "[^/]*" if ch == "%" else re.escape(ch) for ch in full)
    if full[:5].upper() == "INBOX" and (len(full) == 5 or full[5] in "/*%"):
        body = "INBOX" + body[len(re.escape(full[:5])):]
    return re.fullmatch(body, name, re.DOTALL) is not None


def test_list_patterns_match_as_rfc_9051_says() -> None:
    import random

    rng = random.Random(7)
    alphabet = ["a", "b", "/", "*", "%", "x"]
    for _ in range(4000):
        pattern = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        name = "".join(rng.choice("ab/x") for _ in range(rng.randint(0, 10)))
        reference = rng.choice(["", "a/", "b"])
        assert names.matches(names.compile_pattern(reference, pattern), name) == _reference_match(
            reference, pattern, name), (reference, pattern, name)
    for pattern, name, hit in [("inbox", "INBOX", True), ("InBoX/%", "INBOX/x", True), ("Inboxes", "INBOX", False),
                               ("%", "a/b", False), ("*", "a/b", True), ("a/%/c", "a/b/c", True), ("", "a", False)]:
        assert names.matches(names.compile_pattern("", pattern), name) == hit, (pattern, name)


def test_a_list_pattern_takes_linear_time_whatever_its_wildcards() -> None:
    # "*a" repeated against a long name of a's: a backtracking regex takes
    # time exponential in the wildcards (hours at 16); any user can send it.
    import time

    started = time.process_time()
    for stars in (8, 16, 200):
        pattern = names.compile_pattern("", "*a" * stars + "Z")
        assert not names.matches(pattern, "a" * 500)
    assert names.matches(names.compile_pattern("", "*a" * 200), "a" * 500)
    assert time.process_time() - started < 5.0
