"""Parsing a message from bytes, tolerantly.

What: ``parse_message`` gives an ``email.message.EmailMessage`` for any input;
``split_header_body`` cuts raw bytes into header section and body exactly.

Why: mail comes from anyone. The stdlib parser (``email.policy.default``)
already copes with bare LF line endings, 8-bit header bytes (kept with
``surrogateescape``), missing boundaries and missing bodies by recording
defects instead of failing; this module adds the last safety net (deeply
nested input can exhaust the stdlib's recursion) so callers never see an
exception from parsing.
"""

from __future__ import annotations

import re
from email.feedparser import BytesFeedParser
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser

from .headers import SafeFoldPolicy

__all__ = ["SteppedParse", "header_end", "parse_message", "split_header_body"]

# email.policy.default, except that serialising a parsed message again (a
# download, a forward) never turns one header field into two (headers.py).
_POLICY = SafeFoldPolicy()

# The stdlib's feedparser checks every line against the boundary of every
# enclosing multipart, so its time grows with lines x depth: 1,000 nested
# levels of a 100 KB message took 4.5 s (on the event loop, for webmail).
# Past this many boundary declarations -- derived.MAX_DEPTH, the depth IMAP
# BODYSTRUCTURE describes -- the body is kept as raw text instead.
MAX_BOUNDARIES = 100
_BOUNDARY = re.compile(rb"boundary\s*=", re.IGNORECASE)


def header_end(raw: bytes, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """Where the header section of the entity in ``raw[start:end]`` ends.

    Returns ``(header_end, body_start)``: the header bytes are
    ``raw[start:header_end]`` and include the line break of the last field;
    the empty line (RFC 5322 2.1: CRLF, or a bare LF) lies between
    ``header_end`` and ``body_start``. An entity that starts with an empty line
    has no header; one without an empty line is all header and has an empty
    body (``body_start == end``).
    """
    if end is None:
        end = len(raw)
    # An empty line right at the start: no header fields at all.
    if raw.startswith(b"\r\n", start) and start + 2 <= end:
        return start, start + 2
    if raw.startswith(b"\n", start) and start + 1 <= end:
        return start, start + 1
    crlf = raw.find(b"\n\r\n", start, end)
    # Only a bare-LF empty line before the CRLF one matters: the search for
    # it stops there instead of running through the whole body.
    lf = raw.find(b"\n\n", start, crlf + 1 if crlf >= 0 else end)
    if crlf < 0 and lf < 0:
        return end, end
    if lf < 0 or (0 <= crlf < lf):
        return crlf + 1, crlf + 3
    return lf + 1, lf + 2


def split_header_body(raw: bytes) -> tuple[bytes, bytes]:
    """Split at the first empty line (CRLF CRLF or LF LF), exact bytes.

    The header part ends with the empty line (as IMAP ``BODY[HEADER]`` does,
    RFC 9051 6.4.5), so ``header + body == raw``. Without an empty line the
    whole input is header and the body is ``b""``.
    """
    _h_end, b_start = header_end(raw)
    return raw[:b_start], raw[b_start:]


def parse_message(raw: bytes) -> EmailMessage:
    """Parse ``raw`` with ``email.policy.default``; never raises.

    Defects (RFC violations) are in ``msg.defects`` and each part's
    ``defects``. If the full parse fails (e.g. recursion on absurdly deep
    nesting), or the message declares more than MAX_BOUNDARIES multipart
    boundaries, the header is parsed alone and the body kept as its raw text.
    """
    if not _too_many_boundaries(raw):
        try:
            return BytesParser(policy=_POLICY).parsebytes(raw)  # type: ignore[return-value]
        except Exception:
            pass
    return _header_only(raw)


def _too_many_boundaries(raw: bytes) -> bool:
    for n, _ in enumerate(_BOUNDARY.finditer(raw), 1):
        if n > MAX_BOUNDARIES:
            return True
    return False


class SteppedParse:
    """``parse_message`` a slice at a time, with bounds: for a caller that
    must stop on a deadline (Sieve's ``body`` test, sieve/message.py)
    and may go on later where it stopped.

    ``step()`` feeds the next ``SLICE`` octets of the message to the
    stdlib's feed parser and says whether the parse is complete; then
    ``message`` is the result, as ``parse_message`` would give it, except:

    - at most ``max_parts`` MIME parts (the message itself and multipart
      containers count) are built: once the parser has made more, the rest
      of the input is not fed (the last multiparts lack their close
      delimiter, a defect the parser records) and ``truncated`` is set. The
      parser's cost is per part (about 0.2 ms each): 50,000 parts of 36
      octets took 10 s;
    - of each run of body lines between two lines that begin with ``--``
      (only those can be MIME delimiters, RFC 2046 5.1.1) the first
      ``max_run`` octets are kept: a part's content is cut there (a line
      cut in the middle ends with CRLF) and the structure stays. Callers
      that look at a bounded prefix of each part (Sieve compares the first
      ``Limits.max_value_chars`` characters) need no more, and the parser
      then never holds a multi-megabyte payload (its last-line-ending
      search alone takes 7 ms per MB without releasing the GIL);
    - more than MAX_BOUNDARIES boundary declarations in what was fed, or
      an exception from the parser: the header alone, the body as its raw
      text (the same fallback as ``parse_message``).
    """

    SLICE = 8 * 1024

    def __init__(self, raw: bytes, *, max_parts: int = 1000, max_run: int = 1024 * 1024) -> None:
        self.max_parts = max_parts
        self.max_run = max_run
        self.message: EmailMessage | None = None
        self.truncated = False
        _h_end, b_start = header_end(raw)
        self._header = raw[:b_start]
        self._body = raw[b_start:]
        self._pos = 0  # in the body
        self._run = 0  # octets of the current run of non-delimiter lines kept so far
        self._boundaries = 0
        self._parts = 0
        factory = _POLICY.message_factory or EmailMessage

        def counting(policy: object = _POLICY) -> EmailMessage:
            self._parts += 1
            return factory(policy=policy)  # type: ignore[call-arg,no-any-return]

        self._parser = BytesFeedParser(counting, policy=_POLICY)  # type: ignore[arg-type]
        self._parts = 0  # the feed parser tried the factory once
        self._hpos = 0  # the header is fed first, as it is

    def step(self) -> bool:
        """Feed one slice; True once ``message`` is set."""
        if self.message is not None:
            return True
        try:
            if self._hpos < len(self._header):
                if self._hpos == 0:
                    self._boundaries = len(_BOUNDARY.findall(self._header))
                data = self._header[self._hpos : self._hpos + self.SLICE]
                self._hpos += len(data)
                self._parser.feed(data)
                return False
            if self._pos >= len(self._body) or self._parts > self.max_parts:
                self.truncated = self._pos < len(self._body)
                self.message = self._parser.close()  # type: ignore[assignment]
                return True
            data = self._next_slice()
            self._boundaries += len(_BOUNDARY.findall(data))
            if self._boundaries > MAX_BOUNDARIES:
                self.message = _header_only(self._header + self._body)
                return True
            self._parser.feed(data)
        except Exception:
            self.message = _header_only(self._header + self._body)
            return True
        return False

    def _next_slice(self) -> bytes:
        """The next slice of the body, with each run of lines that cannot
        be a delimiter kept to ``max_run`` octets."""
        body, start = self._body, self._pos
        end = min(len(body), start + self.SLICE)
        if end < len(body):
            nl = body.rfind(b"\n", start, end)
            if nl >= 0:
                end = nl + 1  # whole lines where there are any
        self._pos = end
        out = []
        seg = start
        while seg < end:
            if (seg == 0 or body[seg - 1] == 0x0A) and body.startswith(b"--", seg):
                self._run = 0  # a line that may be a delimiter: a new run
            nxt = body.find(b"\n--", seg, end)
            seg_end = end if nxt < 0 else nxt + 1
            room = self.max_run - self._run
            if room > 0:
                keep = body[seg : seg + min(room, seg_end - seg)]
                self._run += len(keep)
                if len(keep) < seg_end - seg and not keep.endswith(b"\n"):
                    keep += b"\r\n"
                out.append(keep)
            seg = seg_end
        return b"".join(out)


def _header_only(raw: bytes) -> EmailMessage:
    """``parse_message``'s fallback: the header parsed, the body its raw text."""
    try:
        header, body = split_header_body(raw)
        msg = BytesHeaderParser(policy=_POLICY).parsebytes(header)
        msg.set_payload(body.decode("ascii", "surrogateescape"))
        return msg  # type: ignore[return-value]
    except Exception:
        msg = EmailMessage(policy=_POLICY)
        msg.set_payload(raw.decode("ascii", "surrogateescape"))
        return msg
