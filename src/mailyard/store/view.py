"""A list of one mailbox's messages, kept current from ``changes_since``.

Readers that keep a mailbox's list between requests (the POP3 maildrop
listing, the webmail folder listing) hold a ``MailboxView``: the mailbox's
UIDs in ascending order, each with a value the reader chooses (a size, or
nothing). ``refresh`` brings it up to date cheaply:

- every change to a mailbox takes a new mod-sequence (store/api.py), so an
  unchanged ``highest_modseq`` means the view is current and nothing is read;
- otherwise ``changes_since`` gives just the messages changed and the UIDs
  expunged since the view's mod-sequence (RFC 7162 3.1.5 CHANGEDSINCE,
  3.2.10 VANISHED): new UIDs are added, expunged ones dropped, flag changes of
  known messages leave the list as it is;
- the first use, and a mailbox with another id or UIDVALIDITY (RFC 9051
  2.3.1.1: UIDs of one UIDVALIDITY never mean other messages), read the whole
  list again.

``refresh`` reports what moved (``ViewUpdate``) so a reader rebuilds only
what depends on it: a sort order when messages came or went, everything when
the view was reloaded. What a reader shows a session is its own business:
POP3 hands each session an immutable snapshot taken at login (RFC 1939
section 8), the web a page of the current list.

The IMAP selected-mailbox state (protocols/imap/selected.py) is not built on
this: it also tracks message sequence numbers, flags and the untagged
responses owed to one session, and must not import the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..gcpause import gc_paused
from .api import Mailbox, MailboxGone, MessageInfo, Store

V = TypeVar("V")
# A view of more messages than this is built in a thread (asyncio.to_thread),
# off the event loop that serves every session; a small one in place, where
# the hop would cost more than the work.
BUILD_INLINE = 2_000


@dataclass(frozen=True, slots=True)
class ViewUpdate:
    """What one ``refresh`` changed: the view was read anew (``reloaded``;
    then ``added`` and ``removed`` are empty and every per-UID value a reader
    derived is stale), or UIDs came (``added``) and went (``removed``)."""

    reloaded: bool = False
    added: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)

    @property
    def moved(self) -> bool:
        """Whether the list of UIDs may differ from before the refresh."""
        return self.reloaded or bool(self.added) or bool(self.removed)


class MailboxView(Generic[V]):
    """One mailbox's UIDs in ascending order, each with a value, kept current.

    ``value`` turns a message's index data into what the reader keeps per
    UID (e.g. its size); without it the values are None and the first load
    reads only the UIDs (``mailbox_summary``, no MessageInfo per message).
    The reader may overwrite values in ``entries`` (POP3 replaces the stored
    size by the exact POP3 size); the view never touches a known UID's value.
    """

    def __init__(self, value: Callable[[MessageInfo], V] | None = None) -> None:
        self._value = value
        self.mailbox_id: int | None = None
        self.uid_validity: int | None = None
        self.modseq = 0  # the mailbox's highest_modseq the view reflects
        self.entries: dict[int, V] = {}  # uid -> value, ascending uid

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[int]:
        return iter(self.entries)

    def __contains__(self, uid: object) -> bool:
        return uid in self.entries

    def reset(self) -> None:
        """Forget everything: the next ``refresh`` reads the whole list."""
        self.mailbox_id = self.uid_validity = None
        self.modseq = 0
        self.entries = {}

    async def refresh(self, store: Store, mailbox: Mailbox) -> ViewUpdate:
        """Bring the view up to ``mailbox`` (a fresh reference: its
        ``highest_modseq`` says whether anything changed). Raises
        ``MailboxGone`` (and forgets the view) if the mailbox is gone."""
        try:
            if self.mailbox_id != mailbox.id or self.uid_validity != mailbox.uid_validity:
                await self._load(store, mailbox)
                return ViewUpdate(reloaded=True)
            if self.modseq == mailbox.highest_modseq:
                return ViewUpdate()
            changes = await store.changes_since(mailbox, self.modseq)
        except MailboxGone:
            self.reset()
            raise
        entries = self.entries
        removed = [uid for uid in changes.vanished if entries.pop(uid, _ABSENT) is not _ABSENT]
        added: list[int] = []
        last = next(reversed(entries), 0)
        for info in changes.changed:  # flag changes of known messages: nothing to do
            if info.uid in entries:
                continue
            entries[info.uid] = self._value(info) if self._value else None  # type: ignore[assignment]
            added.append(info.uid)
            if info.uid < last:  # not expected (UIDs grow), but keep the UID order
                self.entries = entries = dict(sorted(entries.items()))
            last = max(last, info.uid)
        self.modseq = max(self.modseq, changes.highest_modseq)
        return ViewUpdate(added=added, removed=removed)

    async def _load(self, store: Store, mailbox: Mailbox) -> None:
        self.reset()
        if self._value is None:
            # UIDs only, and the mod-sequence of the same snapshot
            summary = await store.mailbox_summary(mailbox)
            entries: dict[int, V] = dict.fromkeys(summary.uids)  # type: ignore[arg-type]
            modseq = summary.mailbox.highest_modseq
        else:
            # The modseq is taken before the listing: a change racing with it
            # shows up again in the next changes_since, and applying it twice
            # is harmless.
            modseq = mailbox.highest_modseq
            listed = await store.list_messages(mailbox)
            if len(listed) > BUILD_INLINE:
                entries = await asyncio.to_thread(_entries, listed, self._value)
            else:
                entries = _entries(listed, self._value)
        self.mailbox_id, self.uid_validity = mailbox.id, mailbox.uid_validity
        self.modseq, self.entries = modseq, entries


def _entries(listed: list[MessageInfo], value: Callable[[MessageInfo], V]) -> dict[int, V]:
    with gc_paused():  # a burst of small objects holding no cycles
        return {m.uid: value(m) for m in listed}


_ABSENT = object()
