"""SMTP message data handed out in parts (MessageData) is the same message as
when it is held whole: dot-unstuffing, the bare CR/LF check, the line and
size limits do not depend on where the chunks or the parts are cut."""

from __future__ import annotations

import random

import pytest

from mailyard.protocols.smtp import data as data_module
from mailyard.protocols.smtp.data import DataReader

# How many stuffed dots of a read are judged one by one before the rest are
# counted in bulk: the reader's own value, and the bulk path from the first
# or second dot, so both paths meet every case.
bulk_from = pytest.mark.parametrize("one_by_one", [data_module._ONE_BY_ONE, 0, 1])  # noqa: SLF001


def _read(stream: bytes, chunks: list[int], spill_at: int, **limits: object) -> tuple[bytes | None, int | None, bytes]:
    reader = DataReader(spill_at=spill_at, **limits)  # type: ignore[arg-type]
    parts: list[bytes] = []
    pos = 0
    for size in chunks:
        result = reader.feed(stream[pos : pos + size])
        pos += size
        part = reader.take()
        if part is not None:
            parts.append(part)
        if result is not None:
            data = None if result.data is None else b"".join(parts) + result.data
            return data, result.error.code if result.error else None, result.rest + stream[pos:]
    raise AssertionError("no end of data")


def test_parts_make_the_same_message_as_the_whole() -> None:
    rnd = random.Random(5321)
    pieces = [b"\r\n", b".", b"..", b"\r", b"\n", b"x", b"line", b"\r\n.\r\n", b"\r\n..\r\n", b"a" * 40, b".\r\n"]
    spilled = 0
    for _ in range(3000):
        message = b"".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 60)))
        stream = message + b"\r\n.\r\nQUIT\r\n"
        limits = {
            "max_size": rnd.choice([0, 20, 200]),
            "max_line": rnd.choice([12, 40, 1000]),
            "strict_line_endings": rnd.random() < 0.7,
        }
        chunks = [rnd.randint(1, 24) for _ in range(len(stream))]
        whole = _read(stream, chunks, 1 << 40, **limits)
        spill_at = rnd.choice([1, 5, 32])
        assert _read(stream, chunks, spill_at, **limits) == whole, (message, limits, spill_at)
        spilled += whole[0] is not None and len(whole[0]) > spill_at
    assert spilled > 300  # the parts path was taken


def test_a_large_message_is_held_in_kilobytes() -> None:
    reader = DataReader(max_size=0, max_line=1000, spill_at=64 * 1024)
    block = (b".stuffed" + b"y" * 990 + b"\r\n") * 256
    taken = 0
    for _ in range(100):
        assert reader.feed(block) is None
        part = reader.take()
        taken += len(part) if part else 0
        assert len(reader._out) < 64 * 1024 and len(reader._body) < 1000  # noqa: SLF001
    result = reader.feed(b".\r\n")
    assert result is not None and result.error is None and result.data is not None
    assert taken + len(result.data) == 100 * 256 * 999


def _too_long(message: bytes, max_line: int) -> bool:
    """Line by line (RFC 5321 4.5.3.1.6): a text line is at most ``max_line``
    octets with its CRLF; the dot a client stuffed in front does not count."""
    return any(len(line) + 2 - line.startswith(b".") > max_line for line in message.split(b"\r\n"))


def test_line_limit_matches_a_line_by_line_check() -> None:
    """Lines just under, at and over the limit, long runs without any line
    end, stuffed dots, cut anywhere: the verdict is the line-by-line one."""
    rnd = random.Random(1000)
    for _ in range(1000):
        max_line = rnd.choice([12, 41, 100, 1000])
        pieces = [b"\r\n", b".", b"x", b"y" * (max_line - 3), b"y" * (max_line - 2), b"y" * (max_line - 1),
                  b"z" * (3 * max_line)]
        weights = [8, 3, 8, 2, 2, 2, 1]
        message = b"".join(rnd.choices(pieces, weights, k=rnd.randint(0, 30)))
        if b"\r\n.\r\n" in b"\r\n" + message + b"\r\n":
            continue  # a line that is a lone dot ends the data (tested elsewhere)
        stream = message + b"\r\n.\r\nQUIT\r\n"
        chunks = [rnd.randint(1, 3 * max_line) for _ in range(len(stream))]
        data, code, rest = _read(stream, chunks, spill_at=rnd.choice([16, 1 << 16]), max_size=0, max_line=max_line)
        assert rest == b"QUIT\r\n"
        if _too_long(message, max_line):
            assert code == 500, (message, max_line)
        else:
            assert code is None, (message, max_line)
            assert data == message.replace(b"\r\n.", b"\r\n").removeprefix(b".") + b"\r\n"


def test_bare_line_ends_are_held_in_kilobytes_with_the_same_outcome() -> None:
    """Lines ending in bare LF (RFC 5321 2.3.8 forbids them) move out of the
    reader as CRLF lines do: a transfer of megabytes holds kilobytes, so no
    read rescans what came before, and the end of the data answers as the
    whole message would (550 5.6.0 when strict, the data as sent when not)."""
    head = b"Subject: bare\r\n\r\n..stuffed\r\n"
    block = (b"y" * 76 + b"\n" + b".z\n") * 800  # no CRLF: only bare LF ends a line
    expected = b"Subject: bare\r\n\r\n.stuffed\r\n" + block * 100
    for strict in (True, False):
        reader = DataReader(max_size=0, max_line=1000, strict_line_endings=strict, spill_at=64 * 1024)
        parts: list[bytes] = []
        assert reader.feed(head) is None
        for _ in range(100):  # 6.4 MB
            assert reader.feed(block) is None
            part = reader.take()
            if part is not None:
                parts.append(part)
            held = len(reader._body) + len(reader._out)  # noqa: SLF001
            assert held < 64 * 1024 + len(block), (strict, held)
        result = reader.feed(b"\r\n.\r\nQUIT\r\n")
        assert result is not None and result.rest == b"QUIT\r\n"
        if strict:
            assert result.error is not None and result.error.code == 550 and result.data is None
        else:
            assert result.error is None and result.data is not None
            assert b"".join(parts) + result.data == expected + b"\r\n"


def _model(stream: bytes, max_size: int, max_line: int, strict: bool) -> dict[str, object]:
    """The data phase read whole, as RFC 5321 describes it: the data ends
    at the first <CRLF>.<CRLF> (the CRLF of the DATA line counts, 4.1.1.4), a
    line starting with a dot loses it (4.5.2), and the limits that apply to
    what was sent (4.5.3.1.6-7, 2.3.8)."""
    raw = b"\r\n" + stream
    idx = raw.index(b"\r\n.\r\n")
    data = raw[: idx + 2]  # from the virtual CRLF to the CRLF ending the last line
    unstuffed = data.replace(b"\r\n.", b"\r\n")[2:]
    lines = data[2:].split(b"\n")[:-1]  # the line limit counts lines to any LF
    # a line is its octets with the LF, not counting a leading dot; while
    # streaming, a line ending in a bare LF may be judged one octet longer
    lengths = [(len(line) + 1 - line.startswith(b"."), line.endswith(b"\r")) for line in lines]
    crlf = data.count(b"\r\n")
    return {
        "data": unstuffed,
        "rest": raw[idx + 5 :],
        "big": bool(max_size) and len(unstuffed) > max_size,
        "long": any(n > max_line for n, _ in lengths),
        "long_loose": any(n + (not crlf_end) > max_line for n, crlf_end in lengths),
        "bare": strict and data.count(b"\r") + data.count(b"\n") > 2 * crlf,
    }


def _agrees(stream: bytes, chunks: list[int], spill_at: int, max_size: int, max_line: int,
            strict: bool) -> int | str:
    """Read ``stream`` in ``chunks`` and check the outcome against the model;
    returns the reply code, or "ok"."""
    data, code, rest = _read(stream, chunks, spill_at, max_size=max_size, max_line=max_line,
                             strict_line_endings=strict)
    want = _model(stream, max_size, max_line, strict)
    case = (stream, chunks, max_size, max_line, strict)
    assert rest == want["rest"], case
    if code is None:
        assert not (want["big"] or want["long"] or want["bare"]), case
        assert data == want["data"], case
        return "ok"
    assert data is None
    assert {552: want["big"], 500: want["long_loose"]}.get(code, code == 550 and want["bare"]), (case, code)
    if code == 550:
        assert not (want["big"] or want["long"]), case
    return code


@bulk_from
def test_the_reader_agrees_with_the_whole_data_read_at_once(one_by_one: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the chunks and wherever a stuffed dot or the terminator is
    cut: the same data, the same rest, and an error exactly when a limit
    applies (size first or line length, whichever the reading met first;
    bare line ends only when neither)."""
    monkeypatch.setattr(data_module, "_ONE_BY_ONE", one_by_one)
    rnd = random.Random(4552)
    pieces = [b"\r\n", b".", b"..", b"\r", b"\n", b"x", b"line", b"\r\n.\r\n", b"\r\n..\r\n", b"\r\n.x",
              b"\r\n.\r", b"a" * 40, b".\r\n", b"\r\n\r\n"]
    checked = {"ok": 0, 552: 0, 500: 0, 550: 0}
    for _ in range(6000):
        message = b"".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 50)))
        stream = message + b"\r\n.\r\nQUIT\r\n"
        chunks = [rnd.choice([1, 1, 2, 3, rnd.randint(1, 40)]) for _ in range(len(stream))]
        checked[_agrees(stream, chunks, rnd.choice([1, 7, 1 << 40]), rnd.choice([0, 10, 60, 200]),
                        rnd.choice([12, 40, 1000]), rnd.random() < 0.7)] += 1
    assert min(checked.values()) > 200, checked  # every outcome was met often


@bulk_from
def test_reads_of_many_dotted_lines_agree_with_the_whole_data(one_by_one: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads holding many lines that start with a dot (counted in bulk past
    the first few), the terminator or a dot waiting for its next octets
    anywhere in them."""
    monkeypatch.setattr(data_module, "_ONE_BY_ONE", one_by_one)
    rnd = random.Random(1870)
    pieces = [b"\r\n.", b"\r\n..", b"\r\n.x", b"\r\n.\r", b"\r\n.\r\n", b"x", b"\r", b"\r\n", b"y" * 20]
    checked = {"ok": 0, 552: 0, 500: 0, 550: 0}
    for _ in range(3000):
        message = b"".join(rnd.choices(pieces, [6, 4, 6, 1, 0.1, 8, 1, 3, 0.8], k=rnd.randint(10, 120)))
        stream = message + b"\r\n.\r\nQUIT\r\n"
        chunks = [rnd.choice([len(stream), rnd.randint(20, 200)]) for _ in range(len(stream))]
        checked[_agrees(stream, chunks, rnd.choice([7, 1 << 40]), rnd.choice([0, 0, 20, 60]),
                        rnd.choice([16, 1000]), rnd.random() < 0.5)] += 1
    assert min(checked.values()) > 100, checked  # every outcome was met often


@bulk_from
def test_the_size_limit_is_exact_at_the_terminator(one_by_one: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A message of exactly the limit is taken and one octet more is refused
    (RFC 1870), also when the dot of the terminator or of a stuffed line
    comes at the end of a chunk, before the octets that tell which it is,
    and when a read holds enough dotted lines to be counted in bulk."""
    monkeypatch.setattr(data_module, "_ONE_BY_ONE", one_by_one)
    for body in (b"abcdefgh", b".bcdefgh", b"abc\r\n.fgh", b"\r\n".join([b".x"] * 12), b"\r\n".join([b".."] * 12)):
        size = len(body.replace(b"\r\n.", b"\r\n").removeprefix(b".")) + 2  # with the last CRLF
        stream = body + b"\r\n.\r\n"
        for cut in range(1, len(stream)):
            for limit, code in ((size, None), (size - 1, 552)):
                got = _read(stream, [cut, len(stream)], 1 << 40, max_size=limit, max_line=1000)
                assert got[1] == code, (body, cut, limit, got)
