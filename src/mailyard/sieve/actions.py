"""What a Sieve run decides (RFC 5228 2.10, 4): the actions, in the order
the script took them, and the envelope and limits a run is given.

``Keep`` (into the INBOX, with IMAP flags of RFC 5232), ``FileInto`` (a
mailbox, with flags, ``:create`` of RFC 5490), ``Redirect`` (RFC 5228 4.2,
``:copy`` of RFC 3894), ``Reject`` (RFC 5429), ``Vacation`` (RFC 5230),
``Notify`` (RFC 5435), ``Discard``; ``Result`` holds them with the
duplicate marks (RFC 7352) and the changed header (RFC 5293).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .spamtest import SpamVerdict

# ---------------------------------------------------------------------------
# actions


@dataclass(frozen=True)
class Keep:
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileInto:
    mailbox: str
    flags: tuple[str, ...] = ()
    create: bool = False
    copy: bool = False


@dataclass(frozen=True)
class Redirect:
    address: str
    copy: bool = False


@dataclass(frozen=True)
class Reject:
    reason: str
    extended: bool = False  # ereject: refuse at SMTP time where possible (RFC 5429 2.1)


@dataclass(frozen=True)
class Discard:
    pass


@dataclass(frozen=True)
class Vacation:
    reason: str
    subject: str | None = None
    from_: str | None = None
    addresses: tuple[str, ...] = ()
    seconds: int = 7 * 86400  # RFC 5230 4.1: :days defaults to 7
    mime: bool = False
    handle: str = ""


@dataclass(frozen=True)
class Notify:
    """An ``enotify`` notification (RFC 5435 3): ``method`` a mailto URI
    (RFC 5436), sent once the delivery is durable (delivery/submit.py)."""

    method: str
    from_: str | None = None
    importance: str = "2"  # RFC 5435 3.6: 1 high, 2 normal, 3 low
    options: tuple[str, ...] = ()
    message: str | None = None


Action = Keep | FileInto | Redirect | Reject | Discard | Vacation | Notify


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope of the delivery (RFC 5228 5.4): ``from_`` the
    reverse-path ("" for the null sender), ``to`` the recipient address as
    given in RCPT (before plus-addressing is stripped, so ``:detail`` sees
    the tag). ``spam``: this server's verdict on the copy, the only thing
    ``spamtest`` reads (RFC 5235 3.1: None is "not tested", 0); X-Spam-*
    fields in the message are never trusted, since a sender can write them."""

    from_: str
    to: str
    spam: SpamVerdict | None = None


@dataclass(frozen=True)
class Limits:
    """Bounds on one run. ``separator`` is the subaddress delimiter (RFC
    5233 ``:user``/``:detail``), "" for none."""

    max_seconds: float = 1.0
    max_steps: int = 100_000
    max_actions: int = 32
    max_redirects: int = 4
    max_value_chars: int = 64 * 1024  # a header value or body part is cut here before matching
    min_vacation_seconds: int = 3600
    max_vacation_seconds: int = 90 * 86400
    separator: str = "+"
    max_notifications: int = 3  # notify actions kept per message (RFC 5435 3.9), more are dropped
    max_header_edits: int = 64  # addheader / deleteheader commands run (RFC 5293)
    # The MIME parts (the message, multiparts and leaves, in the order RFC
    # 5173 5 walks them) a body test looks at; parts after these are not
    # seen, as if the message ended there. Parsing costs about 0.2 ms a part:
    # 1,000 is far more than mail has and a bounded cost for mail made to be
    # parsed (50,000 parts took 10 s).
    max_body_parts: int = 1000


@dataclass(frozen=True)
class DuplicateMark:
    """A ``duplicate`` test's id to record once the delivery succeeded
    (RFC 7352 3: the record is kept only when the script completes)."""

    handle: str
    id: str
    seconds: int
    last: bool  # :last: the period counts from this message


@dataclass
class Result:
    actions: list[Action] = field(default_factory=list)
    implicit_keep: bool = True
    duplicates: list[DuplicateMark] = field(default_factory=list)
    # RFC 5293: the message as editheader left it (None: unchanged); what
    # keep, fileinto and redirect deliver
    message: bytes | None = None

    def describe(self) -> list[str]:
        """One line per action, for the CLI and logs."""
        out = []
        for a in self.actions:
            if isinstance(a, Keep):
                out.append("keep" + (f" flags={' '.join(a.flags)}" if a.flags else ""))
            elif isinstance(a, FileInto):
                extra = (" :create" if a.create else "") + (f" flags={' '.join(a.flags)}" if a.flags else "")
                out.append(f"fileinto {a.mailbox!r}{extra}")
            elif isinstance(a, Redirect):
                out.append(f"redirect {a.address!r}" + (" :copy" if a.copy else ""))
            elif isinstance(a, Reject):
                out.append(("ereject " if a.extended else "reject ") + repr(a.reason))
            elif isinstance(a, Discard):
                out.append("discard")
            elif isinstance(a, Vacation):
                out.append(f"vacation days={a.seconds / 86400:g} subject={a.subject!r} handle={a.handle!r}")
            elif isinstance(a, Notify):
                extra = (f" from={a.from_!r}" if a.from_ else "") + (f" message={a.message!r}" if a.message else "")
                out.append(f"notify {a.method!r} importance={a.importance}{extra}")
        return out
