"""The keywords of a mailbox (RFC 9051 2.3.2) and their bounds.

A mailbox keeps the set of keywords defined in it (``mailboxes.keywords``,
space-separated; NULL until first needed in a directory from before it,
then the keywords in use). A keyword is defined when a message of the
mailbox first gets it and stays defined, as in Cyrus and Dovecot: the set
only grows, so whether a write brings a new keyword is one look at the
mailbox's row, never a read of its messages.

The bounds keep what one user can make the store hold in flags: a
message's keywords are at most ``MAX_KEYWORDS`` names of at most
``MAX_KEYWORD_OCTETS`` octets each and ``MAX_KEYWORDS_OCTETS`` in all (4
KiB, kept twice: the row and the ``messages_flags`` index), whatever a
client sends. Without them one STORE
of a few thousand keywords over a large mailbox grew the store by hundreds
of megabytes that no quota counts.

- ``MAX_KEYWORDS`` (256): Cyrus allows 128 user flags per mailbox and real
  clients live within that (Thunderbird's five labels and the tags a user
  makes, Apple Mail's $MailFlagBit0-2, $Forwarded, $Junk/$NotJunk and a
  few more, mutt none); twice that leaves room for every tagging habit.
- ``MAX_KEYWORD_OCTETS`` (64): the longest keywords clients use are
  Thunderbird's tag keys, the tag's name in modified UTF-7.
- ``MAX_KEYWORDS_OCTETS`` (4096, a space counted after each name): 256
  names of 15 octets on average, more than real tag sets use; without it
  the two bounds above allowed 16 KB of keywords on every message, a
  gigabyte and more over a large mailbox, outside any quota.

Past the bound (RFC 9051 7.1: PERMANENTFLAGS then lacks ``\\*``): a STORE
or APPEND that would define a new keyword is refused whole (``KeywordLimit``,
IMAP NO [LIMIT], RFC 5530 3); a COPY, MOVE or delivery (Sieve imap4flags)
copies or delivers the message without the keywords that do not fit
(``fitted``): RFC 9051 6.4.7 keeps flags only "normally", and a server may
refuse keywords beyond what it can store (RFC 9051 2.3.2), while losing or
refusing the message over a keyword would be worse. An import or a restore
(``append_many`` with ``left_out``) goes in as a copy does and names what
it left out. A STORE defines a keyword only when a message it changes gets
it.

Flags compare without case (RFC 9051 2.3.2, RFC 5232 for Sieve): every
write keeps a keyword in the spelling the mailbox has it in (``spelled``),
so one in another case is never new and a mailbox never comes to hold two
spellings of one keyword. The system flags are the five of RFC 9051 2.3.2,
kept in their own spelling; any other word beginning with a backslash is no
flag a message keeps (IMAP refuses it, a delivery leaves it out).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

from .api import KeywordLimit

MAX_KEYWORDS = 256
MAX_KEYWORD_OCTETS = 64
MAX_KEYWORDS_OCTETS = 4096

# RFC 9051 2.3.2: the system flags a message keeps (\Recent is never stored)
SYSTEM_FLAGS = ("\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen")
_SYSTEM_SET = frozenset(SYSTEM_FLAGS)
_SYSTEM = {f.lower(): f for f in SYSTEM_FLAGS}


def _octets(keywords: Iterable[str]) -> int:
    """What ``keywords`` take of ``MAX_KEYWORDS_OCTETS``: each name and a space."""
    return sum(len(k.encode("utf-8")) + 1 for k in keywords)


def keywords_of(flags: Iterable[str]) -> set[str]:
    """The keywords among ``flags``: all but the system flags as stored
    (anything else beginning with a backslash counts, so the bounds hold it
    until ``spelled`` leaves it out)."""
    return {f for f in flags if f not in _SYSTEM_SET}


@functools.lru_cache(maxsize=64)
def _by_case(defined: frozenset[str]) -> dict[str, str]:
    """The mailbox's keywords by their lower case, the first spelling in
    name order where it has more than one (kept from before they were
    compared without case). Read only."""
    return {k.lower(): k for k in sorted(defined, reverse=True)}


def spelled(defined: frozenset[str], flag_sets: Sequence[Iterable[str]]) -> tuple[list[frozenset[str]], set[str]]:
    """(each of ``flag_sets`` as the mailbox keeps flags, the words left out).

    RFC 9051 2.3.2 (and RFC 5232 for Sieve's imap4flags): flags compare
    without case. A system flag takes its canonical spelling; a keyword the
    spelling the mailbox has it in, or a new one the first spelling it
    comes in (in name order), in every set of one write: a mailbox never
    holds one keyword in two spellings, and a keyword in another case is
    not new. A word beginning with a backslash that is no system flag
    (``\\Recent``, never stored; an unknown one) is left out: IMAP refuses
    it before (protocols/imap/flags.py), Sieve's delivery loses it."""
    known = _by_case(defined)
    fresh: dict[str, str] = {}
    left: set[str] = set()
    out = []
    for flags in flag_sets:
        kept = set()
        for f in sorted(flags):
            if f in defined or f in _SYSTEM_SET:
                kept.add(f)
            elif f.startswith("\\"):
                system = _SYSTEM.get(f.lower())
                if system is None:
                    left.add(f)
                else:
                    kept.add(system)
            else:
                key = f.lower()
                kept.add(known.get(key) or fresh.setdefault(key, f))
        out.append(frozenset(kept))
    return out, left


def spelled_removal(defined: frozenset[str], flags: Iterable[str]) -> frozenset[str]:
    """The flags a STORE -FLAGS of ``flags`` takes away: as ``spelled``,
    and each keyword in every spelling the mailbox has it in."""
    (out,), _ = spelled(defined, [flags])
    keys = {k.lower() for k in keywords_of(out)}
    return out | {k for k in defined if k.lower() in keys} if keys else out


def parse_defined(text: str) -> frozenset[str]:
    return frozenset(text.split())


def defined_text(defined: Iterable[str]) -> str:
    return " ".join(sorted(defined))


def is_full(defined: Iterable[str]) -> bool:
    """No new keyword can be defined (RFC 9051 7.1: no ``\\*`` in PERMANENTFLAGS)."""
    defined = frozenset(defined)
    return len(defined) >= MAX_KEYWORDS or _octets(defined) + 2 > MAX_KEYWORDS_OCTETS


def admitted(defined: frozenset[str], flags: Iterable[str]) -> frozenset[str] | None:
    """The mailbox's keywords with those of ``flags`` defined too, or None
    when ``flags`` defines nothing new; KeywordLimit (nothing to be written)
    when a new one is too long or would take the mailbox past its bound."""
    new = keywords_of(flags) - defined
    if not new:
        return None
    for k in sorted(new):
        if len(k.encode("utf-8")) > MAX_KEYWORD_OCTETS:
            raise KeywordLimit(f"Keyword {k[:MAX_KEYWORD_OCTETS]}... is longer than {MAX_KEYWORD_OCTETS} octets")
    if len(defined) + len(new) > MAX_KEYWORDS:
        raise KeywordLimit(f"Too many keywords: a mailbox holds at most {MAX_KEYWORDS}, this one has "
                           f"{len(defined)} and these flags would add {len(new)}; use keywords it has",
                           full=is_full(defined))
    if _octets(defined) + _octets(new) > MAX_KEYWORDS_OCTETS:
        raise KeywordLimit(f"Too many keywords: a mailbox's keywords take at most {MAX_KEYWORDS_OCTETS} octets, "
                           f"this one's take {_octets(defined)} and these flags would add {_octets(new)}; "
                           f"use keywords it has", full=is_full(defined))
    return defined | new


def fitted(defined: frozenset[str], flags: frozenset[str]) -> tuple[frozenset[str], frozenset[str] | None]:
    """(``flags`` without the new keywords that do not fit, the mailbox's
    keywords with the others defined, or None when none is new): for a
    message copied or delivered, which goes in whatever its keywords. The
    new keywords are taken in name order while there is room."""
    new = sorted(keywords_of(flags) - defined)
    if not new:
        return flags, None
    room = max(MAX_KEYWORDS - len(defined), 0)
    octets = MAX_KEYWORDS_OCTETS - _octets(defined)
    taken = []
    for k in new:
        size = len(k.encode("utf-8"))
        if len(taken) < room and size <= MAX_KEYWORD_OCTETS and size + 1 <= octets:
            taken.append(k)
            octets -= size + 1
    dropped = set(new) - set(taken)
    return (flags - dropped if dropped else flags), (defined | set(taken) if taken else None)


def fitted_all(defined: frozenset[str], flag_sets: Sequence[Iterable[str]]
               ) -> tuple[list[frozenset[str]], frozenset[str] | None, set[str]]:
    """(each of ``flag_sets`` ``spelled`` and ``fitted``, the mailbox's
    keywords with the new ones that fit defined (None when none is new),
    the words left out): the messages of one write (a COPY, a delivery, an
    import or restore), the first taking the room first."""
    now = defined
    sets, left = spelled(defined, flag_sets)
    out = []
    for flags in sets:
        kept, more = fitted(now, flags)
        if more is not None:
            now = more
        left |= flags - kept
        out.append(kept)
    return out, (now if now is not defined else None), left
