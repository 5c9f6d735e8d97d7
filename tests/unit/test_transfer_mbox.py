"""The mbox reader (RFC 4155; mboxo/mboxrd quoting), the Maildir file-name
flags and the progress line, byte for byte."""

from __future__ import annotations

import io
from pathlib import Path

from mailyard.transfer import maildir, mbox
from mailyard.transfer.export import mbox_entry
from mailyard.transfer.importer import ContentKeys, clean_flags, target_name, to_crlf
from mailyard.transfer.progress import Progress, Summary

LF_MBOX = (
    b"From alice@example.test Tue Nov 14 22:13:20 2023\n"
    b"From: alice@example.test\n"
    b"Subject: one\n"
    b"Status: RO\n"
    b"X-Status: AFT\n"
    b"X-Keywords: $Label1 work\n"
    b"\n"
    b"hello\n"
    b">From the quoted line\n"
    b">>From a line quoted twice\n"
    b"\n"
    b"From bob@example.test Wed Nov 15 10:00:00 2023\n"
    b"From: bob@example.test\n"
    b"Subject: two\n"
    b"\n"
    b"body two\n"
    b"From a line after a non-empty line is body\n"
    b"\n"
)


def _read(tmp_path: Path, content: bytes) -> list[mbox.MboxMessage]:
    path = tmp_path / "box.mbox"
    path.write_bytes(content)
    return list(mbox.read_mbox(path))


def test_lf_mbox_unquotes_and_reads_flags(tmp_path: Path) -> None:
    one, two = _read(tmp_path, LF_MBOX)
    assert one.data == (b"From: alice@example.test\r\nSubject: one\r\n\r\nhello\r\n"
                        b"From the quoted line\r\n>From a line quoted twice\r\n")
    assert one.flags == {"\\Seen", "\\Answered", "\\Flagged", "\\Draft", "$Label1", "work"}
    assert one.internal_date == 1700000000.0
    assert two.data == (b"From: bob@example.test\r\nSubject: two\r\n\r\nbody two\r\n"
                        b"From a line after a non-empty line is body\r\n")
    assert two.flags == frozenset() and two.internal_date == 1700042400.0
    assert not one.warnings and not two.warnings


def test_crlf_mbox_reads_the_same(tmp_path: Path) -> None:
    crlf = LF_MBOX.replace(b"\n", b"\r\n")
    assert [(m.data, m.flags, m.internal_date) for m in _read(tmp_path, crlf)] == [
        (m.data, m.flags, m.internal_date) for m in _read(tmp_path, LF_MBOX)]


def test_truncated_last_message_is_kept_with_a_warning(tmp_path: Path) -> None:
    msgs = _read(tmp_path, LF_MBOX + b"From c@x Thu Nov 16 10:00:00 2023\nSubject: cut\n\nthe body stops he")
    assert msgs[-1].data == b"Subject: cut\r\n\r\nthe body stops he"
    assert msgs[-1].warnings == ["message 3 (the last) ends in the middle of a line: "
                                 "the file looks truncated; imported as it is"]


def test_not_an_mbox_and_not_a_message(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"Subject: no From_ line\n\nbody\n")
    try:
        list(mbox.read_mbox(path))
    except mbox.NotAnMbox as exc:
        assert "not an mbox file" in str(exc)
    else:
        raise AssertionError("NotAnMbox expected")
    msgs = _read(tmp_path, b"From x Tue Nov 14 22:13:20 2023\n\x00\x01binary garbage\n\n" + LF_MBOX)
    assert msgs[0].not_a_message.startswith("message 1 does not start with a header field")
    assert len(msgs) == 3 and not msgs[1].not_a_message


def test_from_line_without_a_date_falls_back_to_the_date_field(tmp_path: Path) -> None:
    (msg,) = _read(tmp_path, b"From someone\nDate: Tue, 14 Nov 2023 22:13:20 +0000\nSubject: s\n\nb\n")
    assert msg.internal_date == 1700000000.0 and "INTERNALDATE from the Date: field" in msg.warnings[0]


def test_mboxrd_entry_round_trips(tmp_path: Path) -> None:
    data = b"Subject: q\r\n\r\nFrom the start\r\n>From once\r\nplain\r\n"
    flags = frozenset({"\\Seen", "\\Flagged", "todo"})
    entry = mbox_entry(data, flags, 1700000000.0)
    assert entry == (b"From MAILER-DAEMON Tue Nov 14 22:13:20 2023\nSubject: q\nStatus: RO\nX-Status: F\n"
                     b"X-Keywords: todo\n\n>From the start\n>>From once\nplain\n\n")
    (back,) = _read(tmp_path, entry)
    assert (back.data, back.flags, back.internal_date) == (data, flags, 1700000000.0)


def test_maildir_file_name_flags_and_keywords(tmp_path: Path) -> None:
    (tmp_path / "dovecot-keywords").write_text("0 $Label1\n1 work\n")
    keywords = maildir.keywords_file(tmp_path)
    assert keywords == {"a": "$Label1", "b": "work"}
    flags, unknown = maildir.flags_of_name("1700000000.M1P2.host,S=10:2,DFPRSTabz", keywords)
    assert flags == {"\\Draft", "\\Flagged", "\\Answered", "\\Seen", "\\Deleted", "$Label1", "work"}
    assert unknown == ["z"]
    assert maildir.flags_of_name("1700000000.M1P2.host", keywords) == (frozenset(), [])


def test_names_crlf_keys_and_flags() -> None:
    assert target_name(["INBOX"]) == "INBOX"
    assert target_name(["Sent Items"]) == "Sent" and target_name(["INBOX", "Trash"]) == "Trash"
    assert target_name(["Mail", "x"], ["\\HasNoChildren", "\\Junk"]) == "Junk"
    assert target_name(["Lists", "Sent"]) == "Lists/Sent"
    assert to_crlf(b"a\nb\r\nc\n") == b"a\r\nb\r\nc\r\n"
    keys = ContentKeys()
    first, second = keys.key("INBOX", b"same"), keys.key("INBOX", b"same")
    assert second == first + "/2" and keys.key("Sent", b"same") == first
    assert clean_flags({"\\seen", "\\Recent", "ok", "bad(kw"}) == {"\\Seen", "ok"}


def test_progress_plain_lines_off_a_terminal() -> None:
    out = io.StringIO()
    p = Progress("import", total=10, stream=out, tty=False, interval=0.0)
    p.advance(5, 5_000_000)
    line = out.getvalue()
    assert line.startswith("import: 5/10 messages, ") and "messages/s" in line and "ETA" in line
    assert "\r" not in line
    tty = io.StringIO()
    p = Progress("import", total=10, stream=tty, tty=True, interval=0.0)
    p.advance(5)
    assert tty.getvalue().startswith("\r[##########          ] import: 5/10")
    s = Summary()
    s.imported, s.octets = 3, 3000
    s.skip("not a message", 2)
    assert s.lines()[0].startswith("imported 3 messages, 0.0 MB in ")
    assert s.lines()[1:] == ["skipped 2: not a message"]


def test_fetch_runs_are_bounded_by_count_and_octets() -> None:
    from mailyard.transfer.imapsource import chunks

    sized = [(1, 10), (2, 10), (3, 10), (5, 100), (6, 1), (7, 1), (8, 1)]
    assert chunks(sized, messages=3, octets=50) == [[1, 2, 3], [5], [6, 7, 8]]
    assert chunks(sized, messages=2, octets=1000) == [[1, 2], [3, 5], [6, 7], [8]]
    assert chunks([], 3, 50) == []


def test_export_paths_stay_inside_dest() -> None:
    from mailyard.transfer.export import maildir_path, mbox_path

    dest = Path("/x")
    assert mbox_path(dest, "Lists/foo") == Path("/x/Lists/foo.mbox")
    assert mbox_path(dest, "../../etc/..") == Path("/x/_../_../etc/_...mbox")
    assert maildir_path(dest, "INBOX") == dest
    assert maildir_path(dest, "Lists/foo.bar") == Path("/x/.Lists.foo\\2ebar")
    assert maildir._decode("foo\\2ebar") == "foo.bar" and maildir._decode("Caf&AOk-") == "Café"
    assert maildir_path(dest, "Café") == Path("/x/.Caf&AOk-")
