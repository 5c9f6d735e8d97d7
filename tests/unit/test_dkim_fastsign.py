"""DKIM signing's fast path (mailauth/dkim.py ``_sign_fast``) against dkimpy.

Random messages (repeated and absent signed fields, folded values, 8-bit
octets, long lines, empty bodies, trailing blank lines, dot lines, LF line
ends) are signed by the fast path; both signatures must verify with dkimpy
(RFC 6376 6, RFC 8463) and with this project's verifier, and with the clock
held still the fields must be the ones dkimpy writes (``_sign_dkimpy``, the
reference) but for where the lines are folded."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import dkim as dkimpy
import pytest

from mailyard.mailauth import dkim, keys
from mailyard.message.parse import split_header_body

NOW = 1_796_000_000.0


@pytest.fixture(scope="module")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> keys.SigningKeys:
    folder: Path = tmp_path_factory.mktemp("dkim")
    keys.generate(folder, "a.test")
    loaded = keys.load(folder, "a.test")
    assert loaded is not None
    return loaded


def _records(k: keys.SigningKeys) -> dict[str, str]:
    return {rec.name.lower().rstrip("."): rec.text for rec in keys.records(k)}


def _dkimpy_verifies(signed: bytes, records: dict[str, str]) -> list[bool]:
    """dkimpy's verdict on each of the two signatures, top one first."""

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.decode().lower().rstrip("."), "").encode()

    return [dkimpy.DKIM(signed, minkey=1024).verify(idx=i, dnsfunc=dnsfunc) for i in range(2)]


def _ours_verifies(signed: bytes, records: dict[str, str]) -> list[str]:
    def txt(name: str) -> list[str]:
        found = records.get(name.lower().rstrip("."))
        return [found] if found else []

    return [r.result for r in dkim.verify(signed, txt)]


_SIGNED_NAMES = ["From", "To", "Subject", "Date", "Message-ID", "Cc", "Reply-To", "MIME-Version",
                 "Content-Type", "References", "In-Reply-To", "List-Id", "from", "SUBJECT", "to"]
_OTHER_NAMES = ["Received", "X-Mailer", "Return-Path", "X-Tag", "Sender", "Keywords"]


def _value(rng: random.Random) -> bytes:
    words = [b"alice", b"<a@a.test>", b"caf\xc3\xa9", b"\xff\xfe", b"x" * rng.choice((1, 40, 120)),
             b"=?utf-8?q?h=C3=A9?=", b"(comment)", b";", b":", b"a,b"]
    out = b""
    for _ in range(rng.randrange(0, 8)):
        out += rng.choice((b" ", b"  ", b"\t", b" \t ", b"\r\n ", b"\r\n\t", b"\r\n  \t")) + rng.choice(words)
    if rng.random() < 0.3:
        out += rng.choice((b" ", b"\t", b"  \t"))  # trailing WSP
    return out


def _body(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return b""
    if kind == 1:
        return b"\r\n" * rng.randrange(1, 4)
    lines = []
    for _ in range(rng.randrange(1, 30)):
        lines.append(rng.choice((
            b"", b".", b"..", b". ", b"hello  world", b"  leading", b"trailing \t ", b"\t\ttabs\t\tin",
            b"caf\xc3\xa9 \xe2\x82\xac", b"y" * rng.choice((76, 998, 2500)), b" ", b"\t", b"a \t b",
            b"From here", b"--boundary--",
        )))
    body = b"\r\n".join(lines)
    ending = rng.randrange(4)
    if ending == 1:
        body += b"\r\n"
    elif ending == 2:
        body += b"\r\n" * rng.randrange(2, 5)  # empty lines at the end (RFC 6376 3.4.4)
    elif ending == 3:
        body += b"\r\n \r\n\t\r\n"  # WSP-only lines at the end
    return body


def _message(rng: random.Random) -> bytes:
    fields = []
    for _ in range(rng.randrange(0, 12)):
        name = rng.choice(_SIGNED_NAMES if rng.random() < 0.7 else _OTHER_NAMES)
        colon = rng.choice((b": ", b":", b":  ", b":\t"))
        fields.append(name.encode() + colon + _value(rng).lstrip(b"\r\n") + b"\r\n")
    if rng.random() < 0.8:
        fields.insert(rng.randrange(len(fields) + 1), b"From: Alice <alice@a.test>\r\n")
    message = b"".join(fields) + b"\r\n" + _body(rng)
    if rng.random() < 0.15:
        message = message.replace(b"\r\n", b"\n")  # LF line ends throughout
    elif rng.random() < 0.1:
        header, body = split_header_body(message)
        message = header + body.replace(b"\r\n", b"\n", 2)  # LF and CRLF mixed in the body
    return message


def _tag_list(field: bytes) -> list[tuple[bytes, bytes]]:
    """The (name, value without whitespace) pairs of a signature field, in order."""
    value = field.split(b":", 1)[1]
    return [(name.strip(), re.sub(rb"\s+", b"", text)) for name, _eq, text in
            (part.partition(b"=") for part in value.split(b";"))]


def _fields(signed: bytes) -> list[bytes]:
    return [b"DKIM-Signature:" + f for f in signed.split(b"DKIM-Signature:") if f]


def _not_called(*args: object) -> bytes:
    raise AssertionError("signed by dkimpy, not the fast path")


@pytest.mark.parametrize("seed", range(8))
def test_fast_signatures_verify_and_equal_dkimpys(signing_keys: keys.SigningKeys, seed: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: NOW)
    records = _records(signing_keys)
    reference_signer = dkim._sign_dkimpy
    monkeypatch.setattr(dkim, "_sign_dkimpy", _not_called)
    rng = random.Random(seed)
    for _ in range(30):
        message = _message(rng)
        fast = dkim.sign(message, signing_keys)  # every message here is one for the fast path
        header, _body = split_header_body(message)
        reference = reference_signer(message, signing_keys, dkim._include_headers(header))
        assert _dkimpy_verifies(fast + message, records) == [True, True], message
        assert _ours_verifies(fast + message, records) == ["pass", "pass"], message
        fast_fields, reference_fields = _fields(fast), _fields(reference)
        assert len(fast_fields) == len(reference_fields) == 2
        for mine, theirs in zip(fast_fields, reference_fields, strict=True):
            # the same tags, values and order (b= included: both algorithms
            # are deterministic); only the folding may differ
            assert _tag_list(mine) == _tag_list(theirs), message
            unfold = (mine.replace(b"\r\n", b""), theirs.replace(b"\r\n", b""))
            assert unfold[0].split(b"; b=")[0] == unfold[1].split(b"; b=")[0]


def test_fast_path_does_not_call_dkimpy(signing_keys: keys.SigningKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain message is signed without dkimpy's per-message code."""
    message = b"From: a@a.test\r\nTo: b@b.test\r\nSubject: hi\r\n\r\nbody\r\n"
    dkim.sign(message, signing_keys)  # keys cached

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("dkimpy was asked to sign")

    monkeypatch.setattr(dkimpy.DKIM, "sign", refused)
    monkeypatch.setattr(dkimpy.DomainSigner, "__init__", refused)
    records = _records(signing_keys)
    signed = dkim.sign(message, signing_keys) + message
    monkeypatch.undo()
    assert _dkimpy_verifies(signed, records) == [True, True]


def test_fast_field_folding(signing_keys: keys.SigningKeys) -> None:
    """RFC 5322 2.1.1: lines of at most 78 characters; b= starts its own
    line, so a refold of the tags before it cannot reach into it."""
    message = (b"From: a@a.test\r\nTo: b@b.test\r\nCc: c@c.test\r\nSubject: hi\r\nDate: x\r\n"
               b"Message-ID: <1@a.test>\r\nReferences: <0@a.test>\r\nMIME-Version: 1.0\r\n\r\nbody\r\n")
    signed = dkim.sign(message, signing_keys)
    lines = signed.split(b"\r\n")
    assert lines[-1] == b"" and all(len(line) <= 78 for line in lines)
    starts = [line for line in lines if line.startswith(b"DKIM-Signature: v=1; a=")]
    assert len(starts) == 2 and lines[0] == starts[0]
    b_lines = [line for line in lines if line.startswith(b" b=")]
    assert len(b_lines) == 2
    for field in _fields(signed):
        assert b";\r\n b=" in field
        assert all(line[:1] in (b" ", b"\t") for line in field.split(b"\r\n")[1:-1])  # continuation lines


@pytest.mark.parametrize("message", [
    # VT and FF: dkimpy's bytes.strip() takes them with WSP, so dkimpy signs
    b"From: a@a.test\x0b\r\nSubject: \x0cx\r\n\r\nbody\r\n",
    # a line that is no field: dkimpy judges (it refuses the message)
    b"From: a@a.test\r\nnot a field\r\n\r\nbody\r\n",
])
def test_messages_outside_the_fast_path_go_to_dkimpy(signing_keys: keys.SigningKeys, message: bytes,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    called = []
    real = dkim._sign_dkimpy

    def spy(*args: object) -> bytes:
        called.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(dkim, "_sign_dkimpy", spy)
    try:
        signed = dkim.sign(message, signing_keys)
    except dkimpy.DKIMException:
        signed = None
    assert called == [1]
    if signed is not None:
        assert _dkimpy_verifies(signed + message, _records(signing_keys)) == [True, True]
