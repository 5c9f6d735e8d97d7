"""A message as Sieve tests see it: ``SieveMessage`` (shared by the runs
of one delivery: the header split and the MIME parse done once) and the
per-run view the tests read (header fields decoded as RFC 5228 2.7.2 asks,
addresses, the body parts of RFC 5173), and address parts (RFC 5228 2.7.4,
RFC 5233 :user and :detail).
"""

from __future__ import annotations

import functools
import time
from email.message import EmailMessage

from ..message.address import Group, Mailbox, parse_address_list
from ..message.headers import bytes_to_text, decode_words, split_fields
from ..message.parse import SteppedParse, split_header_body
from .actions import Limits
from .errors import SieveRuntimeError
from .match import fold


class SieveMessage:
    """A message as the Sieve runs of one delivery share it (``run`` takes
    it or the bytes): the header split once, and the MIME parse a ``body``
    test needs (RFC 5173) done at most once whatever the number of
    recipients' scripts, with each part's decoded content.

    The parse goes a slice at a time (message/parse.py ``SteppedParse``)
    under the deadline of the run that needs it; a run out of time fails
    (RFC 5228 2.10.6) and leaves the rest to the next run that asks. It
    builds at most ``Limits.max_body_parts`` parts (plus a slice's worth)
    and keeps of a part's lines the first ``16 * max_value_chars`` octets
    (enough to decode the ``max_value_chars`` characters a test compares,
    whatever the encoding). Meant for runs with the same ``Limits``; one
    run at a time."""

    def __init__(self, raw: bytes) -> None:
        # made on the event loop for every delivery while Sieve is on, used
        # only by a run (in a thread): the header is split there, on first use
        self.raw = raw
        self._parse: SteppedParse | None = None
        self._parts: list[EmailMessage] | None = None
        self._contents: dict[int, str | None] = {}

    @functools.cached_property
    def _split(self) -> tuple[list[tuple[str, bytes]], bytes]:
        header, body = split_header_body(self.raw)
        return split_fields(header), body

    @property
    def fields(self) -> list[tuple[str, bytes]]:
        """The header fields: (name as written, raw value)."""
        return self._split[0]

    @property
    def body_raw(self) -> bytes:
        return self._split[1]

    def body_parts(self, limits: Limits, deadline: float) -> list[EmailMessage]:
        """The first ``limits.max_body_parts`` MIME parts, in ``walk`` order;
        ``SieveRuntimeError`` when the parse does not end by ``deadline``."""
        if self._parts is None:
            if self._parse is None:
                self._parse = SteppedParse(self.raw, max_parts=limits.max_body_parts,
                                           max_run=16 * limits.max_value_chars)
            while not self._parse.step():
                if time.monotonic() > deadline:
                    raise SieveRuntimeError("the script ran too long")
            assert self._parse.message is not None
            parts: list[EmailMessage] = []
            for part in self._parse.message.walk():
                if len(parts) >= limits.max_body_parts:
                    break
                parts.append(part)  # type: ignore[arg-type]
            self._parts = parts
        return self._parts

    def content(self, index: int, part: EmailMessage) -> str | None:
        """The decoded content of the ``index``-th part (a broken transfer
        encoding: the raw text); None when it is no text."""
        if index not in self._contents:
            try:
                content = part.get_content()
            except Exception:  # noqa: BLE001 - a broken transfer encoding: the raw text
                content = part.get_payload()
            if isinstance(content, bytes):
                content = bytes_to_text(content)
            self._contents[index] = content if isinstance(content, str) else None
        return self._contents[index]


class MessageView:
    """The message one run sees: the shared ``SieveMessage`` until
    editheader (RFC 5293) changes the header, then a copy of its own."""

    def __init__(self, message: SieveMessage) -> None:
        self.source = message
        self.raw = message.raw
        self.body_raw = message.body_raw
        self.original = message.fields  # (name as written, raw value): what editheader changes
        self.fields = [(name.lower(), value) for name, value in self.original]
        self.edited = False
        self._headers: dict[str, list[str]] = {}
        self._addresses: dict[tuple[str, str, str], list[str]] = {}
        self.folded_cache: dict[tuple, list[str]] = {}

    def folded(self, key: tuple, limits: Limits) -> list[str]:
        """The values a fast test compares (``_fast_test``): the fields'
        decoded values or the addresses' parts, cut and folded, once per
        message and key."""
        hit = self.folded_cache.get(key)
        if hit is None:
            kind, names, comparator, part = key
            limit = limits.max_value_chars
            raw: list[str] = []
            for name in names:
                raw += self.headers(name) if kind == "header" else self.addresses(name, part, limits.separator)
            hit = self.folded_cache[key] = [fold(comparator, v[:limit]) for v in raw]
        return hit

    def edit(self, original: list[tuple[str, bytes]]) -> None:
        """Replace the header fields (RFC 5293): later tests see the new ones."""
        self.original = original
        self.fields = [(name.lower(), value) for name, value in original]
        self.edited = True
        self._headers.clear()
        self._addresses.clear()
        self.folded_cache.clear()
        self.raw = b"".join(n.encode("ascii") + b": " + v + b"\r\n" for n, v in original) + b"\r\n" + self.body_raw
        self.source = SieveMessage(self.raw)  # the body tests see the edited header (Content-Type)

    def headers(self, name: str) -> list[str]:
        """The values of the fields named ``name``, unfolded and RFC 2047
        decoded (RFC 5228 2.7.2), leading and trailing white space removed."""
        name = name.lower()
        hit = self._headers.get(name)
        if hit is None:
            hit = self._headers[name] = [decode_words(bytes_to_text(v)) for n, v in self.fields if n == name]
        return hit

    def addresses(self, name: str, part: str, separator: str) -> list[str]:
        """The ``part`` of each address in the fields named ``name`` (RFC
        5228 5.1); a part that names nothing (``:detail`` without a
        separator) is left out."""
        key = (name.lower(), part, separator)
        hit = self._addresses.get(key)
        if hit is not None:
            return hit
        out: list[str] = []
        for raw in self.raw_headers(name):
            try:
                items = parse_address_list(raw)
            except Exception:  # noqa: BLE001 - an unparsable field has no address to test
                continue
            for item in items:
                for box in item.mailboxes if isinstance(item, Group) else (item,):
                    value = address_part(box, part, separator)
                    if value is not None:
                        out.append(value)
        self._addresses[key] = out
        return out

    def raw_headers(self, name: str) -> list[str]:
        name = name.lower()
        return [bytes_to_text(v) for n, v in self.fields if n == name]



def address_part(addr: Mailbox | str, part: str, separator: str) -> str | None:
    if isinstance(addr, Mailbox):
        local, domain = addr.local_part, addr.domain or ""
        full = addr.addr_spec
    else:
        full = addr
        local, _, domain = addr.rpartition("@") if "@" in addr else (addr, "", "")
    if part == "all":
        return full
    if part == "localpart":
        return local
    if part == "domain":
        return domain
    # RFC 5233 4: :user before the first separator, :detail after it; no
    # separator in the local part: :detail names nothing (the test fails)
    if separator and separator in local:
        user, _, detail = local.partition(separator)
    else:
        user, detail = local, None
    return user if part == "user" else detail
