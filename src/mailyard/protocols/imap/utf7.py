"""Modified UTF-7 for mailbox names (RFC 3501 section 5.1.3, RFC 9051 appendix A.1).

IMAP4rev1 clients that did not ENABLE UTF8=ACCEPT or IMAP4rev2 see mailbox
names in this 7-bit form; the store keeps names as UTF-8 (str).
"""

from __future__ import annotations

import base64
import binascii


class UTF7Error(ValueError):
    """The string is not valid modified UTF-7."""


def encode(name: str) -> str:
    """Encode a Unicode mailbox name to modified UTF-7."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            # RFC 3501 5.1.3: modified BASE64 uses "," for "/" and omits "=" padding.
            b64 = base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
            out.append("&" + b64 + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode(text: str) -> str:
    """Decode modified UTF-7 to Unicode; raise UTF7Error when malformed.

    Strictness follows RFC 3501 5.1.3: printable US-ASCII must represent itself,
    so "&" must start a shifted run and 8-bit characters are refused.
    """
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ord(ch) < 0x20 or ord(ch) > 0x7E:
            raise UTF7Error("mailbox name is not 7-bit")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise UTF7Error("unterminated &-sequence")
        run = text[i + 1 : end]
        i = end + 1
        if not run:
            out.append("&")
            continue
        b64 = run.replace(",", "/")
        b64 += "=" * (-len(b64) % 4)
        try:
            raw = base64.b64decode(b64, validate=True)
            decoded = raw.decode("utf-16-be")
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise UTF7Error("bad modified BASE64") from exc
        if any(0x20 <= ord(c) <= 0x7E for c in decoded):
            # printable ASCII must not be encoded (RFC 3501 5.1.3)
            raise UTF7Error("printable ASCII inside &-sequence")
        out.append(decoded)
    return "".join(out)
