"""Mail data reader: everything after 354 up to ``<CRLF>.<CRLF>``.

Works on whole chunks, never line by line in Python. Every line that starts
with a dot follows a ``<CRLF>``: the terminator is the first ``<CRLF>.``
followed by ``<CRLF>``, and any other ``<CRLF>.`` is a stuffed dot (RFC 5321
4.5.2). So one search for ``<CRLF>.`` through each chunk finds both; a
chunk without a dot (one ``memchr``, as in base64 attachments) skips it.
Unstuffing is one ``replace`` on a region known to hold stuffed dots; line
lengths are checked a block of half the limit at a time (one ``find`` for an
LF in each, see ``_check_limits``).

The reader starts with a virtual ``CRLF`` (the one that ended the DATA
command), so ``.\\r\\n`` straight after DATA is an empty message and a dot
at the start of the first line is unstuffed like any other.

Limits, none of which buffer what exceeds them:

* Size (RFC 1870, RFC 5321 4.5.3.1.7): once the unstuffed size passes
  ``max_size`` the data seen so far is dropped and the reader only looks
  for the terminator; the result is ``552 5.3.4``.
* Text line length (RFC 5321 4.5.3.1.6: 1000 octets with CRLF, not
  counting the stuffed dot): same treatment, result ``500 5.5.2``.
* Line endings (SMTP smuggling, CVE-2023-51764/51765/51766): only
  ``<CRLF>.<CRLF>`` ends the data (RFC 5321 4.1.1.4 says ``<LF>.<LF>`` MUST
  NOT). That alone keeps *this* server safe, but a message containing
  ``<LF>.<CRLF>`` or ``<CR>.<CR>`` may end early at a sloppier next hop and
  let the rest be read as commands there. With ``strict_line_endings`` (the
  default) a message containing any bare CR or bare LF is refused with
  ``550 5.6.0``, as Postfix (smtpd_forbid_bare_newline), Sendmail 8.18 and
  Exim 4.97 now do. RFC 5321 2.3.8 forbids bare CR/LF in SMTP text anyway.
  Such a message is only read to its end, none of it kept.

Lines end at any LF as far as holding goes (the line limit counts them so
too): data with bare LF line ends moves out line by line like CRLF data,
so memory and work per transfer do not depend on the line endings.
"""

from __future__ import annotations

from .replies import Reply

__all__ = ["DataReader", "DataResult"]

_TERMINATOR = b"\r\n.\r\n"

TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
BARE_NEWLINE = Reply(550, "5.6.0", "Message contains bare CR or LF; lines must end with CRLF")


class DataResult:
    """Outcome of a complete DATA phase: ``data`` when accepted, else ``error``.

    ``data`` is the message's last part: all of it unless parts were handed
    out before with ``take``. ``rest`` is whatever followed the terminator
    (pipelined commands).
    """

    __slots__ = ("data", "error", "rest")

    def __init__(self, data: bytes | None, error: Reply | None, rest: bytes) -> None:
        self.data = data
        self.error = error
        self.rest = rest


# Lines starting with a dot judged one at a time in a chunk; past that, in C.
_ONE_BY_ONE = 8

# Unstuffed data held before it is handed out (``take``): the memory one
# transfer costs besides the partial line and the chunk being read.
SPILL_AT = 64 * 1024


class DataReader:
    """Reads one message's data; ``feed`` returns a result at the end.

    Complete lines are checked and dot-unstuffed as they arrive; only the
    line in progress stays raw. Once ``spill_at`` octets of finished data are
    held, ``take`` hands them out (the glue spools them to disk), so a
    transfer holds kilobytes whatever the message size. A message smaller
    than that is returned whole in the DataResult, never handed out.
    """

    def __init__(
        self, max_size: int, max_line: int, strict_line_endings: bool = True, spill_at: int = SPILL_AT
    ) -> None:
        self.max_size = max_size
        self.max_line = max_line
        self.strict = strict_line_endings
        self.spill_at = spill_at
        # Raw input from the last line end on (a CRLF first: initially the
        # virtual one of the DATA command line).
        self._body = bytearray(b"\r\n")
        self._line_start = 2  # where the current (incomplete) line begins in _body
        self._scanned = 0  # in _body: every "\r\n." before this is judged (stuffed dot or terminator)
        self._stuffed = 0  # stuffed dots judged so far (the data is that much shorter than the raw input)
        self._dots_held = 0  # of those, the ones still in _body (at most one past a cut, see _move_out)
        self._consumed = 0  # raw octets moved out of _body so far
        self._out = bytearray()  # unstuffed data not yet handed out
        self._virtual = True  # _out still starts with the virtual CRLF
        self._bare = 0  # CR or LF octets not part of a CRLF, in the moved-out data
        self.spilled = False  # parts were handed out with ``take``
        self.error: Reply | None = None

    @property
    def discarding(self) -> bool:
        """True once a limit is exceeded and data is being thrown away."""
        return self.error is not None

    def take(self) -> bytes | None:
        """Finished data to store now, once ``spill_at`` octets are held."""
        if len(self._out) < self.spill_at or self.error is not None:
            return None
        out = self._out
        self._out = bytearray()
        self.spilled = True
        if self._virtual:
            self._virtual = False
            return bytes(memoryview(out)[2:])
        return bytes(out)

    def feed(self, chunk: bytes | bytearray) -> DataResult | None:
        """Take a chunk; return a DataResult when the terminator was seen."""
        body = self._body
        body += chunk
        if self.error is not None:
            return self._discard(body)
        idx = self._scan_dots(body)
        # the data so far ends here: at the terminator, else before a
        # "\r\n." not yet judged (its dot may be the terminator's)
        end = idx + 2 if idx >= 0 else min(len(body), self._scanned + 2)
        self._check_limits(body, end)
        if self.error is not None:
            if idx >= 0:
                return DataResult(None, self.error, bytes(body[idx + 5 :]))
            # Keep only what a terminator split across chunks needs.
            del body[:-4]
            self._out = bytearray()
            return None
        if idx < 0:
            cut = self._safe_cut(body)
            if cut > 0:
                self._move_out(cut)
            return None
        rest = bytes(body[idx + 5 :])
        del body[end:]
        self._move_out(len(body))
        if self.strict and self._bare:
            return DataResult(None, BARE_NEWLINE, rest)
        out = self._out
        self._out = bytearray()
        data = bytes(memoryview(out)[2:]) if self._virtual else bytes(out)
        return DataResult(data, None, rest)

    def _discard(self, body: bytearray) -> DataResult | None:
        """Past a limit: only the terminator matters; ``body`` holds the last
        four octets of the input before this chunk."""
        idx = body.find(_TERMINATOR) if body.find(b".") >= 0 else -1
        if idx < 0:
            del body[:-4]
            return None
        return DataResult(None, self.error, bytes(body[idx + 5 :]))

    def _scan_dots(self, body: bytearray) -> int:
        """Judge every ``<CRLF>.`` from ``_scanned`` on: the first followed by
        ``<CRLF>`` is the terminator, whose place is returned; every one
        before it is a stuffed dot, counted (RFC 5321 4.5.2). One whose next
        octets have not come yet stays unjudged (``_scanned``). -1: no
        terminator yet.

        Mail has few lines that start with a dot: they are judged one at a
        time. Past ``_ONE_BY_ONE`` in a chunk, C finds the terminator and
        counts the dots before it, or before the last four octets (the only
        place a ``<CRLF>.`` may wait for its next octets), so data made of
        dotted lines costs a pass of ``count``, not a Python step per line."""
        n = len(body)
        pos = self._scanned
        dot = body.find(b".", pos)
        if dot < 0:
            self._scanned = max(pos, n - 2)  # a "\r\n." may begin in the last two octets
            return -1
        pos = max(pos, dot - 2)
        one_by_one = _ONE_BY_ONE
        while True:
            if not one_by_one:
                idx = body.find(_TERMINATOR, pos)
                stop = idx + 2 if idx >= 0 else n - 2  # a "\r\n." within [pos, stop) is followed by 2 octets
                if stop - pos >= 3:
                    count = body.count(b"\r\n.", pos, stop)
                    self._stuffed += count
                    self._dots_held += count
                if idx >= 0:
                    self._scanned = idx
                    return idx
                pos = max(pos, n - 4)
                one_by_one = -1  # the tail, one by one
            p = body.find(b"\r\n.", pos)
            if p < 0:
                self._scanned = max(pos, n - 2)
                return -1
            if p + 3 < n and body[p + 3] != 0x0D:
                pass  # "\r\n.x": a stuffed dot
            elif p + 4 < n:
                if body[p + 4] == 0x0A:
                    self._scanned = p
                    return p
                # "\r\n.\rx": a stuffed dot before a bare CR
            else:
                self._scanned = p
                return -1
            self._stuffed += 1
            self._dots_held += 1
            pos = p + 3
            one_by_one -= 1

    @staticmethod
    def _safe_cut(body: bytearray) -> int:
        """Where complete lines end in ``body``: everything before it can move
        out. Lines end at any LF here, as the line limit counts them, so data
        with bare LF line ends moves out like CRLF data and the raw input held
        is one partial line whatever the line endings. After a CRLF the cut is
        in front of it (the next ``<CRLF>.`` or terminator begins there); after
        a bare LF it is behind it: no ``<CRLF>.``, CRLF or terminator can span
        either point, so unstuffing, the bare CR/LF count and the terminator
        search see the same octets as on the whole data."""
        nl = body.rfind(b"\n")
        if nl <= 0:
            return 0
        return nl - 1 if body[nl - 1] == 0x0D else nl + 1

    def _move_out(self, cut: int) -> None:
        """Unstuff ``_body[:cut]`` (whole lines, see ``_safe_cut``) into ``_out``."""
        body = self._body
        if self.strict:
            region = body if cut == len(body) else body[:cut]
            crlf = region.count(b"\r\n")
            # CR and LF octets, in one pass: those not in a CRLF are bare
            self._bare += cut - len(region.translate(None, b"\r\n")) - 2 * crlf
        # A "\r\n." never spans ``cut`` (``_safe_cut``): of the stuffed dots
        # judged, only one at the cut itself stays behind.
        staying = 1 if self._dots_held and cut < self._scanned and body.startswith(b"\r\n.", cut) else 0
        if self.strict and self._bare:
            # RFC 5321 2.3.8: the message is refused at its end (550 5.6.0)
            # whatever else it holds, so none of it is kept.
            self._out = bytearray()
        elif self._dots_held > staying:
            # RFC 5321 4.5.2: a line starting with a dot loses that dot. The
            # only line that is a single dot is the terminator, already cut
            # off, and every "\r\n." before ``cut`` was judged a stuffed dot.
            self._out += body[:cut].replace(b"\r\n.", b"\r\n")
        else:
            with memoryview(body) as view:
                self._out += view[:cut]
        del body[:cut]
        self._dots_held = staying
        self._scanned = max(0, self._scanned - cut)
        self._consumed += cut
        self._line_start = max(0, self._line_start - cut)

    def _check_limits(self, body: bytearray, end: int) -> None:
        """Size and line length of the data up to ``end``. The size counts
        only the stuffed dots judged: while a ``<CRLF>.`` waits for its next
        octets the data is cut before it, so the count never passes the
        data's size, and at the terminator it is exact."""
        if self.max_size and self._consumed + end - 2 - self._stuffed > self.max_size:
            self.error = TOO_BIG
            return
        start = self._line_start
        if end - start <= self.max_line - 2:
            return  # no line in this region can be too long
        limit = self.max_line
        nl = body.rfind(b"\n", start, end)
        last_start = nl + 1 if nl >= 0 else start  # the incomplete line begins here
        self._line_start = last_start
        # Complete lines lie in [start, last_start). A line of ``limit`` or
        # more octets before its LF holds a whole block of ``step`` octets
        # aligned on ``pos`` (2 * step - 1 <= limit), so only blocks without
        # an LF (one memchr each) need the exact look: no pass over every line.
        step = max(1, limit // 2)
        pos = start
        while pos + step <= last_start:
            if body.find(b"\n", pos, pos + step) >= 0:
                pos += step
                continue
            line_start = body.rfind(b"\n", start, pos) + 1 or start
            line_end = body.find(b"\n", pos + step, last_start)  # the LF at last_start - 1 at the latest
            length = line_end - line_start + 1  # "+1" is the LF, the CR is inside
            # the stuffed dot does not count
            if length > limit and length - (body[line_start] == 0x2E) > limit:
                self.error = LINE_TOO_LONG
                return
            pos = line_end + 1
        partial = end - last_start
        if partial:
            partial -= (body[end - 1] == 0x0D) + (body[last_start] == 0x2E)
        if partial > limit - 2:
            self.error = LINE_TOO_LONG
