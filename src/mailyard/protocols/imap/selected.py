"""The selected mailbox as one session sees it (RFC 9051 2.3.1.2, 5.2, 7.5.1).

`MessageMap` holds the message sequence numbers: the UIDs in sequence order.
The map changes only when the session *announces* a change (EXISTS grows it,
EXPUNGE shrinks it), so numbers stay what the client believes.

`SelectedMailbox` keeps the rest of a session's view (what it has announced
up to which mod-sequence, expunges held back, its \\Recent share, the SEARCHRES
result) and turns the backend's changes into untagged responses: EXISTS,
RECENT, FETCH (flags) and EXPUNGE or VANISHED.

A message another session expunged stays in the view, and readable, until
this session has announced the expunge (RFC 2180 4.1.1): the backend keeps it
while the session holds it (`ImapBackend.hold_expunged`, moved forward after
each announcement), and the index data cache keeps its record, so FETCH
serves it and answers OK. The backend tells every session
that a mailbox changed (`ImapBackend.watch`); the session marks its view
dirty and, at the end of its next command (or at once in IDLE), `sync` asks
what changed since the mod-sequence it last reported.
"""

from __future__ import annotations

import logging
from array import array
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from .backend import NoSpace
from .commands import SequenceSet
from .flags import PERMANENT_FLAGS, RecentUids, session_flags
from .response import Atom, Raw, flag_list, format_uid_set

if TYPE_CHECKING:
    from .backend import ImapBackend, MailboxRecord, MessageRecord
    from .engine import ImapEngine

log = logging.getLogger("mailyard.imap")


class UpdatingResult(Protocol):
    """A live SEARCH or SORT result of the selected mailbox (RFC 5267 4.3,
    contexts.py): told of expunges before they are announced (4.3.4) and
    refreshed with the new and changed messages after EXISTS (4.3.3)."""

    def expunged(self, engine: ImapEngine, sel: SelectedMailbox, uids: Iterable[int]) -> None: ...

    async def refresh(self, engine: ImapEngine, backend: ImapBackend, sel: SelectedMailbox,
                      records: Sequence[MessageRecord]) -> None: ...

# A mailbox of more messages than this is big: its index-data cache is built
# where it does not hold up the other connections (ImapIO.compute), and kept
# while the session IDLEs, since building it again after every DONE would
# cost a read of every message each time, while the syncs during IDLE keep it
# current for the cost of the changes. A smaller mailbox's cache is dropped
# in IDLE (an idle connection keeps little memory) and built again in a few
# milliseconds, mostly from the list the store shares among its sessions.
LARGE_VIEW = 10_000
# Records the big caches kept through IDLE may hold together, in the
# sessions that share one ``KeptCaches`` (a server process's): some 250 MB
# at most (records are shared with the store's listing when it keeps one).
# Beyond it, the cache of the session that began IDLE longest ago goes, and
# is built again when a command needs it after DONE.
IDLE_KEPT_RECORDS = 1_000_000
# Untagged FETCH lines of other sessions' flag changes, or expunged UIDs
# (EXPUNGE lines, VANISHED), a session formats between two turns of the
# other connections (as a FETCH pauses by the work it formats,
# handlers/messages.py FETCH_TURN): a STORE 1:* or an expunge of most of a big mailbox is
# announced to every session of it, each in slices written as they are made.
ANNOUNCE_TURN = 10_000

# ImapIO.compute: ``fn()`` where it does not hold up the other connections
Compute = Callable[[Callable[[], Any]], Awaitable[Any]]


class SequenceError(ValueError):
    """A message sequence number beyond the mailbox size (RFC 9051 9: tagged BAD)."""


class UidRuns(Sequence[int]):
    """An ascending sequence of distinct UIDs stored as runs of consecutive
    UIDs: ``starts[i]`` is the first UID of run i, ``firsts[i]`` its index in
    the sequence. A mailbox that was delivered to and rarely expunged is a
    few runs, so each session's view of it costs bytes, not 4-8 bytes per
    message; the worst case (no two UIDs consecutive) costs 8 bytes per
    message. UIDs are 32-bit (RFC 9051 2.3.1.1)."""

    __slots__ = ("_n", "firsts", "starts")

    def __init__(self, uids: Iterable[int] = ()) -> None:
        self.starts = array("I")
        self.firsts = array("I")
        self._n = 0
        self.extend(uids)

    def __len__(self) -> int:
        return self._n

    def _run_length(self, r: int) -> int:
        nxt = self.firsts[r + 1] if r + 1 < len(self.firsts) else self._n
        return nxt - self.firsts[r]

    def _at(self, i: int) -> int:
        r = bisect_right(self.firsts, i) - 1
        return self.starts[r] + i - self.firsts[r]

    def __getitem__(self, index: int | slice) -> Any:
        n = self._n
        if isinstance(index, slice):
            lo, hi, step = index.indices(n)
            if step != 1:
                return [self._at(i) for i in range(lo, hi, step)]
            return self._slice(lo, hi)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("UID index out of range")
        return self._at(index)

    def _slice(self, lo: int, hi: int) -> Sequence[int]:
        if lo >= hi:
            return []
        r = bisect_right(self.firsts, lo) - 1
        first = self.firsts[r]
        if hi <= first + self._run_length(r):  # within one run: a range
            base = self.starts[r] - first
            return range(base + lo, base + hi)
        out: list[int] = []
        while lo < hi:
            first = self.firsts[r]
            end = min(hi, first + self._run_length(r))
            base = self.starts[r] - first
            out.extend(range(base + lo, base + end))
            lo = end
            r += 1
        return out

    def __iter__(self) -> Iterator[int]:
        for r, start in enumerate(self.starts):
            yield from range(start, start + self._run_length(r))

    def index_left(self, uid: int) -> int:
        """`bisect.bisect_left` for ``uid``: the index of the first UID >= it."""
        r = bisect_right(self.starts, uid) - 1
        if r < 0:
            return 0
        offset = uid - self.starts[r]
        length = self._run_length(r)
        return self.firsts[r] + (offset if offset < length else length)

    def index_right(self, uid: int) -> int:
        """`bisect.bisect_right` for ``uid``: the index of the first UID > it."""
        return self.index_left(uid + 1)

    def last(self) -> int:
        r = len(self.starts) - 1
        return self.starts[r] + self._run_length(r) - 1

    def append(self, uid: int) -> None:
        """Add a UID above all held ones."""
        self._add_run(uid, 1)

    def extend(self, uids: Iterable[int]) -> None:
        """Add ascending UIDs above all held ones (a SELECT's whole mailbox:
        one pass, a run started only where the UIDs break)."""
        starts, firsts = self.starts.append, self.firsts.append
        n = self._n
        prev = self.last() if n else -2
        for uid in uids:
            if uid != prev + 1:
                starts(uid)
                firsts(n)
            prev = uid
            n += 1
        self._n = n

    def _add_run(self, start: int, length: int) -> None:
        """Add ``length`` consecutive UIDs from ``start``, above all held ones."""
        if self._n and start == self.last() + 1:
            self._n += length
            return
        self.starts.append(start)
        self.firsts.append(self._n)
        self._n += length

    def without(self, gone: Sequence[int]) -> UidRuns:
        """A copy without the UIDs ``gone`` (ascending, each held). Every
        session rebuilds its view after each expunge it announces, so only
        the runs from the first expunged UID to the last are rebuilt; the
        runs before them are copied as they are and those after them with
        their indexes moved down (array slices, not a call per run), and the
        cost follows the expunged UIDs, not the mailbox's runs."""
        out = UidRuns()
        n = len(gone)
        if not n:
            out.starts, out.firsts, out._n = self.starts[:], self.firsts[:], self._n
            return out
        starts, firsts = self.starts, self.firsts
        r = max(0, bisect_right(starts, gone[0]) - 1)  # the run holding the first expunged UID
        out.starts, out.firsts = starts[:r], firsts[:r]
        out._n = firsts[r] if r < len(firsts) else self._n
        k = 0
        runs = len(starts)
        while r < runs and k < n:
            start = starts[r]
            end = start + self._run_length(r)  # one past the run's last UID
            lo = start
            while k < n and gone[k] < end:
                uid = gone[k]
                k += 1
                if uid > lo:
                    out._add_run(lo, uid - lo)
                lo = uid + 1
            if lo < end:
                out._add_run(lo, end - lo)
            r += 1
        if r < runs:
            # the runs after the last expunged UID: the same UIDs, n places
            # earlier (never adjacent to the run before them: runs are maximal
            # and an expunge only takes UIDs away)
            shift = self._n - out._n - (self._n - firsts[r])  # UIDs removed
            out.starts.extend(starts[r:])
            out.firsts.extend(array("I", [f - shift for f in firsts[r:]]))
            out._n = self._n - shift
        return out


class MessageMap:
    """UIDs of the selected mailbox, ascending; index + 1 is the sequence number."""

    def __init__(self, uids: Iterable[int] = ()) -> None:
        self.uids = UidRuns(sorted(uids))

    def __len__(self) -> int:
        return len(self.uids)

    @property
    def max_uid(self) -> int:
        return self.uids.last() if self.uids else 0

    def uid_of(self, seq: int) -> int:
        return self.uids[seq - 1]

    def seq_of(self, uid: int) -> int | None:
        i = self.uids.index_left(uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i + 1
        return None

    def resolve_seqs(self, seqset: SequenceSet) -> list[tuple[int, int]]:
        """(seq, uid) pairs for a message sequence set, ascending, no duplicates."""
        n = len(self.uids)
        if n == 0 or (seqset.highest() or 0) > n:
            raise SequenceError("message sequence number out of range")
        ranges = list(seqset.resolve(n))
        if len(ranges) == 1:  # "n" or "a:b" or "1:*": no set to build and sort
            a, b = ranges[0]
            return list(zip(range(a, b + 1), self.uids[a - 1 : b], strict=True))
        return self._pairs([(a - 1, b) for a, b in ranges])

    def resolve_uids(self, uidset: SequenceSet) -> list[tuple[int, int]]:
        """(seq, uid) pairs for the UIDs of a uid-set that exist (RFC 9051 6.4.9:
        non-existent UIDs are ignored; ``*`` is the largest UID)."""
        largest = self.max_uid
        ranges = list(uidset.resolve(largest))
        if len(ranges) == 1:  # the common case: no set to build and sort
            lo = self.uids.index_left(ranges[0][0])
            hi = self.uids.index_right(ranges[0][1])
            return list(zip(range(lo + 1, hi + 1), self.uids[lo:hi], strict=True))
        return self._pairs([(self.uids.index_left(a), self.uids.index_right(b)) for a, b in ranges])

    def _pairs(self, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """(seq, uid) pairs of the index spans [lo, hi), merged, ascending."""
        out: list[tuple[int, int]] = []
        end = 0
        for lo, hi in sorted(spans):
            lo = max(lo, end)
            if lo < hi:
                out.extend(zip(range(lo + 1, hi + 1), self.uids[lo:hi], strict=True))
                end = hi
        return out

    def append(self, uids: Iterable[int]) -> None:
        """New messages (announce with EXISTS); UIDs are above all known ones."""
        for uid in sorted(uids):
            if uid > self.max_uid:
                self.uids.append(uid)

    def expunge(self, uids: Iterable[int]) -> list[int]:
        """Remove UIDs; return the sequence numbers to announce, in order, each
        valid at the time of its EXPUNGE response (RFC 9051 7.5.1)."""
        out: list[int] = []
        present: list[int] = []
        for uid in sorted(set(uids)):
            seq = self.seq_of(uid)
            if seq is not None:
                out.append(seq - len(out))  # each earlier EXPUNGE moved it down by one
                present.append(uid)
        if present:
            self.uids = self.uids.without(present)
        return out


async def message_map(uids: Sequence[int], compute: Compute) -> MessageMap:
    """SELECT's sequence-number map of ``uids`` (ascending); a big
    mailbox's is made through ``compute``, off the event loop."""
    if len(uids) > LARGE_VIEW:
        return await compute(partial(MessageMap, uids))
    return MessageMap(uids)


def _index(records: Sequence[MessageRecord], modseq: int, uids: UidRuns, known: frozenset[str],
           ) -> tuple[dict[int, MessageRecord], int, frozenset[str], list[int]]:
    """A session's index-data cache loaded from a listing read at ``modseq``
    or later: the records by UID, the mod-sequence it is current to, the
    keywords the client was not told of (``note_flags``), and the UIDs of
    the view ``uids`` the listing lacks (expunged since the view was made;
    the listing may also hold newer messages not announced yet, so counting
    is not enough)."""
    cache = {m.uid: m for m in records}
    top = max(modseq, max((m.modseq for m in records), default=0))
    keywords: set[str] = set()
    for m in records:
        if not m.flags <= known:
            keywords.update(f for f in m.flags if f not in known and not f.startswith("\\"))
    missing = [u for u in uids if u not in cache]
    return cache, top, frozenset(keywords), missing


class KeptCaches:
    """The big index-data caches kept through IDLE by the sessions that
    share this object, oldest IDLE first, within ``IDLE_KEPT_RECORDS``.
    Used on the sessions' one event loop, between their steps."""

    __slots__ = ("_kept", "records")

    def __init__(self) -> None:
        self._kept: dict[SelectedMailbox, int] = {}  # -> records counted; the oldest first
        self.records = 0

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, sel: SelectedMailbox, records: int) -> None:
        """``sel`` begins IDLE with a cache of ``records`` kept: count it,
        and drop the oldest kept caches (this one too, if it alone is over)
        while the count is over the budget."""
        self.release(sel)
        self._kept[sel] = records
        self.records += records
        sel.kept = self
        self._within_budget()

    def resize(self, sel: SelectedMailbox, records: int) -> None:
        """``sel``'s kept cache holds ``records`` now (the syncs during IDLE
        add the messages that arrive, and drop the expunged): count that,
        and drop the oldest kept caches while the count is over the budget,
        as for a new one."""
        counted = self._kept.get(sel)
        if counted is None:
            return
        self._kept[sel] = records
        self.records += records - counted
        self._within_budget()

    def _within_budget(self) -> None:
        while self.records > IDLE_KEPT_RECORDS:
            oldest = next(iter(self._kept))
            self.release(oldest)
            oldest.infos_cache = None

    def release(self, sel: SelectedMailbox) -> None:
        """``sel``'s IDLE ended (or its session closed): no longer counted."""
        records = self._kept.pop(sel, None)
        if records is not None:
            self.records -= records
            sel.kept = None


@dataclass(eq=False, slots=True, weakref_slot=True)
class SelectedMailbox:
    """The selected mailbox as this session sees it (slots: one per
    connection with a mailbox selected, idle ones included)."""

    mailbox: MailboxRecord
    readonly: bool
    view: MessageMap
    known_modseq: int  # changes up to here are reflected in what we announced
    dirty: bool = False
    pending_expunge: set[int] = field(default_factory=set)
    own_changes: dict[int, int] = field(default_factory=dict)  # uid -> modseq we reported
    saved: frozenset[int] = frozenset()  # RFC 5182 SEARCHRES
    condstore: bool = False  # a CONDSTORE-enabling command was used (RFC 7162 3.1)
    # index data by UID, kept current from changes_since; dropped in IDLE so an
    # idle connection costs little memory
    infos_cache: dict[int, MessageRecord] | None = None
    infos_modseq: int = 0
    infos_stale: bool = False
    notes: int = 0  # notifications of changes received (``changed``)
    # (since, notes when read, changes): the changes infos() read during
    # this command, for the sync at its end to use instead of reading the
    # same again; dropped when the sync is done
    read_changes: tuple[int, int, Any] | None = None
    held_modseq: int = -1  # what hold_expunged was last told
    # RFC 3501 2.3.2: UIDs that are \\Recent in this session (rev1 clients only)
    recent: RecentUids = field(default_factory=RecentUids)
    # (last claimed UID before, highest UID) this session's APPEND claimed in
    # its own write, for this session to take when it announces them
    claimed_ahead: tuple[int, int] | None = None
    # RFC 9051 7.3.5: the flags the client was told of in FLAGS, and keywords
    # seen on messages since that it was not told of yet
    # (immutable: the common case, no keywords, shares one set among all
    # sessions; an IDLE session is kept small)
    known_flags: frozenset[str] = frozenset(PERMANENT_FLAGS)
    new_keywords: frozenset[str] = frozenset()
    # RFC 9051 7.1: the mailbox can take no new keyword, so PERMANENTFLAGS
    # lacks \* (the store bounds them: SELECT's summary, a STORE refused for it)
    keywords_full: bool = False
    # RFC 5267 4.3: live SEARCH / SORT results by command tag (contexts.py),
    # told of the messages each change touched
    contexts: dict[str, UpdatingResult] = field(default_factory=dict)
    # ImapIO.compute, for the work on every message of a big mailbox; None: in place
    compute: Compute | None = None
    # the session's connection is gone: a command still under way builds
    # no cache to keep (``release``)
    released: bool = False
    # the budget that counts the cache while it is kept through IDLE
    # (``KeptCaches.keep`` to ``release``), told as the syncs change it
    kept: KeptCaches | None = None

    def note_flags(self, records: Iterable[MessageRecord]) -> None:
        """Look for keywords the client has not been told of in FLAGS."""
        known = self.known_flags
        for m in records:
            if not m.flags <= known:
                self.new_keywords |= {f for f in m.flags if f not in known and not f.startswith("\\")}

    def send_flags(self, engine: ImapEngine) -> None:
        """``* FLAGS`` and ``* OK [PERMANENTFLAGS]`` (RFC 9051 7.3.5, 7.1):
        at SELECT, and again when a keyword comes into use, before any FETCH
        shows it -- a client drops keywords it was not told of."""
        if self.new_keywords:
            self.known_flags |= self.new_keywords
            self.new_keywords = frozenset()
        keywords = sorted(f for f in self.known_flags if not f.startswith("\\"))
        flags = flag_list([*PERMANENT_FLAGS, *keywords])
        engine.untagged(Atom("FLAGS"), flags)
        if self.readonly:
            engine.untagged_status("OK", "No permanent flags permitted", "PERMANENTFLAGS ()")
        elif self.keywords_full:
            perm = " ".join(str(f) for f in flags)
            engine.untagged_status("OK", "No new keywords permitted", f"PERMANENTFLAGS ({perm})")
        else:
            perm = " ".join(str(f) for f in flags)
            engine.untagged_status("OK", "Flags permitted", f"PERMANENTFLAGS ({perm} \\*)")

    def announce_flags(self, engine: ImapEngine) -> None:
        """Send FLAGS again if a message gained a keyword the client does not know."""
        if self.new_keywords:
            self.send_flags(engine)

    def changed(self) -> None:
        """The backend reported a change to this mailbox."""
        self.dirty = True
        self.infos_stale = True
        self.notes += 1

    async def changes_since(self, backend: ImapBackend, since: int) -> Any:
        """``backend.changes_since`` of this mailbox, or the answer infos()
        got for the same question in this command if no change was notified
        since it was read: a FETCH or STORE reads the changes for the cache
        and the end-of-command sync asks the same question, and the second
        read could differ only by commits not notified yet, which the
        session learns of when their notification arrives, as always. (The
        backends notify a write's own session before the write returns, so a
        command's own writes, the \\Seen of a FETCH BODY[], are read again.)"""
        memo = self.read_changes
        if memo is not None and memo[0] == since and memo[1] == self.notes:
            return memo[2]
        notes = self.notes
        ch = await backend.changes_since(self.mailbox, since)
        self.read_changes = (since, notes, ch)
        return ch

    async def infos(self, backend: ImapBackend) -> dict[int, MessageRecord]:
        """Index data of the mailbox by UID, from the session's cache.

        The cache is loaded once (list_messages) and then brought up to date
        with changes_since whenever the backend reported a change, so a FETCH
        of one message does not list the whole mailbox. The cache of a big
        mailbox (LARGE_VIEW) is built through ``compute``: a dictionary of
        200,000 records and a pass over the view take some 50 ms."""
        cache = self.infos_cache
        if cache is None:
            box = await backend.get_mailbox_by_id(self.mailbox.id)
            modseq = box.highest_modseq if box else 0
            self.infos_stale = False  # (a notification during the reads sets it again)
            records = await backend.list_messages(self.mailbox)
            # on the view as it stands: it changes only between this
            # session's commands, so the work may run in another thread
            index = partial(_index, records, modseq, self.view.uids, self.known_flags)
            if self.compute is not None and max(len(records), len(self.view)) > LARGE_VIEW:
                cache, self.infos_modseq, keywords, missing = await self.compute(index)
            else:
                cache, self.infos_modseq, keywords, missing = index()
            if not self.released:
                self.infos_cache = cache
            if keywords:
                self.new_keywords |= keywords
            await self._keep_expunged(backend, cache, missing)
        elif self.infos_stale:
            self.infos_stale = False
            ch = await self.changes_since(backend, self.infos_modseq)
            await self._update_cache(backend, cache, ch)
        return cache

    def idle_begins(self, kept: KeptCaches | None = None) -> None:
        """IDLE (RFC 2177) starts: a small mailbox's index-data cache goes,
        so an idle connection keeps little memory; a big one's is kept
        (LARGE_VIEW) and kept current by the syncs of the changes, within
        the budget of the sessions sharing ``kept``."""
        self.read_changes = None
        cache = self.infos_cache
        if cache is None:
            return
        if len(cache) <= LARGE_VIEW:
            self.infos_cache = None
        elif kept is not None:
            kept.keep(self, len(cache))

    def release(self) -> None:
        """The session's connection is gone: what it keeps of the mailbox
        goes now, not when the cycle collector finds the session (it and
        its I/O object refer to each other), which may be long after for a
        cache of 200,000 records. The view stays, for a command that is
        still under way (its output goes nowhere); the session drops this
        object itself once no command uses it (``ImapSession._let_go``)."""
        self.released = True
        self.infos_cache = None
        self.read_changes = None
        self.contexts.clear()

    async def _update_cache(self, backend: ImapBackend, cache: dict[int, MessageRecord], ch: Any) -> None:
        """Bring the index-data cache up to ``ch`` (changes after ``infos_modseq``)."""
        kept = []
        for uid in ch.vanished:
            if self.view.seq_of(uid) is None:
                cache.pop(uid, None)
            else:
                kept.append(uid)  # not announced yet: still served (RFC 2180 4.1.1)
        if kept:
            await self._keep_expunged(backend, cache, kept)  # with the flags they ended with
            self.pending_expunge.update(kept)
        for m in ch.changed:
            cache[m.uid] = m
        self.note_flags(ch.changed)
        self.infos_modseq = max(self.infos_modseq, ch.highest_modseq)

    async def _keep_expunged(self, backend: ImapBackend, cache: dict[int, MessageRecord], uids: list[int]) -> None:
        """Index data of messages of the view expunged elsewhere, which the
        backend keeps for this session until it announces the expunge, into
        ``cache`` (the one the command uses, even if the session's went
        meanwhile: KeptCaches, ``release``)."""
        if uids:
            for m in await backend.expunged_messages(self.mailbox, uids):
                cache[m.uid] = m
            self.pending_expunge.update(uids)

    def hold(self, backend: ImapBackend) -> None:
        """Tell the backend which expunges this session has announced: those
        after ``known_modseq`` it still needs, unless none is pending."""
        if not self.pending_expunge and self.held_modseq != self.known_modseq:
            self.held_modseq = self.known_modseq
            backend.hold_expunged(self.mailbox, self.known_modseq)

    def resolve(self, seqset: SequenceSet, uid: bool) -> list[tuple[int, int]]:
        """(seq, uid) pairs of a sequence set or uid set; raises SequenceError."""
        if seqset.saved:
            # RFC 5182 2.1: "$" is the saved result, in either kind of command
            pairs = [(self.view.seq_of(u), u) for u in sorted(self.saved)]
            return [(q, u) for q, u in pairs if q is not None]
        return self.view.resolve_uids(seqset) if uid else self.view.resolve_seqs(seqset)

    def enable_condstore(self, engine: ImapEngine) -> None:
        """A CONDSTORE enabling command (FETCH MODSEQ or CHANGEDSINCE, STORE
        UNCHANGEDSINCE, SEARCH MODSEQ, STATUS HIGHESTMODSEQ) while
        this mailbox is selected. RFC 7162 3.1: from now on the connection
        is CONDSTORE-aware (MODSEQ in every untagged FETCH, HIGHESTMODSEQ on
        every later SELECT), and the first such command reports the
        mailbox's HIGHESTMODSEQ in an untagged OK. The value is the one this
        session has announced changes up to, so a client that keeps it
        misses nothing still to come."""
        if "CONDSTORE" not in engine.enabled:
            engine.enabled |= {"CONDSTORE"}
        if not self.condstore:
            self.condstore = True
            engine.untagged_status("OK", "Highest", f"HIGHESTMODSEQ {self.known_modseq}")

    def recent_of(self, engine: ImapEngine) -> RecentUids | None:
        """This session's \\Recent UIDs, or None when the client does not see
        the flag (IMAP4rev2, RFC 9051 dropped it)."""
        return None if engine.rev2 else self.recent

    async def claim_recent(self, backend: ImapBackend, above: int | None, upto: int) -> None:
        """RFC 3501 2.3.2: a new message is \\Recent in the first session told
        of it; a read-only (EXAMINE) session does not take that away. When the
        claim cannot be written (full disk) this session shows no new
        \\Recent and they stay for the next one, rather than failing the
        command that noticed them. The claim goes no further than ``upto``,
        the highest UID this session announced: a message delivered since
        is left for the session that announces it."""
        ahead, self.claimed_ahead = self.claimed_ahead, None
        if ahead is not None and ahead[1] <= upto:
            # claimed by this session's APPEND (RFC 3501 2.3.2): taken here
            # without a write; what arrived after it is claimed as usual
            first, last = ahead
            self.recent.add(first if above is None else max(first, above), last)
            if last == upto:
                return
            above = last if above is None else max(above, last)
        try:
            first = await backend.claim_recent(self.mailbox, claim=not self.readonly, upto=upto)
        except NoSpace:
            log.warning("imap: \\Recent not claimed, the disk is full")
            return
        # above: the new messages start there, so ranges stay disjoint
        self.recent.add(first if above is None else max(first, above), upto)

    async def sync(self, engine: ImapEngine, backend: ImapBackend, allow_expunge: bool,
                   turn: Callable[[], Awaitable[None]] | None = None) -> None:
        """Announce what other sessions changed (RFC 9051 5.2, 7.4.1, 7.5.1).
        Expunges wait while ``allow_expunge`` is False (FETCH, STORE, SEARCH:
        sequence numbers must not shift under the client). ``turn`` writes
        out what is queued and lets the other connections in: awaited
        between slices of ANNOUNCE_TURN expunges or flag changes."""
        if self.dirty:
            self.dirty = False
            cache = self.infos_cache
            # The cache asks from where the view does: these changes bring
            # both up to date, so the next FETCH reads nothing more. (Not
            # while an expunge the view keeps needs the held record:
            # infos() fetches it when a command needs the cache.)
            shared = cache is not None and self.infos_modseq == self.known_modseq
            if shared:
                self.infos_stale = False  # (a notification during the read sets it again)
            changes = await self.changes_since(backend, self.known_modseq)
            self.read_changes = None
            view = self.view
            if shared and cache is self.infos_cache and (
                allow_expunge or not any(view.seq_of(u) is not None for u in changes.vanished)
            ):
                for uid in changes.vanished:
                    if view.seq_of(uid) is None:
                        cache.pop(uid, None)  # (one in the view: announced below, which drops it)
                for m in changes.changed:
                    cache[m.uid] = m
                self.infos_modseq = max(self.infos_modseq, changes.highest_modseq)
            for uid in changes.vanished:
                if view.seq_of(uid) is not None:
                    self.pending_expunge.add(uid)
            new: list[int] = []
            updated = []
            touched = [m for m in changes.changed if m.uid not in self.pending_expunge] if self.contexts else []
            top = view.max_uid
            for info in changes.changed:
                if info.uid > top:
                    new.append(info.uid)
                elif info.uid not in self.pending_expunge and self.own_changes.get(info.uid) != info.modseq:
                    updated.append(info)
            self.known_modseq = max(self.known_modseq, changes.highest_modseq)
            if changes.highest_modseq > self.infos_modseq:
                # The view now holds what the index-data cache may not: a
                # commit read here before its notification arrived (another
                # worker's datagram, the event loop's callback) leaves no
                # other mark, and a FETCH of a message just announced must
                # find its data (RFC 9051 7.4.1: announced, so it exists).
                self.infos_stale = True
            self.own_changes.clear()
            self.note_flags(changes.changed)
            if allow_expunge and self.pending_expunge:
                gone, self.pending_expunge = list(self.pending_expunge), set()
                await self.announce_expunge(engine, gone, turn)
            if new:
                view.append(new)
                engine.untagged(len(view), Atom("EXISTS"))
                if not engine.rev2:
                    await self.claim_recent(backend, min(new) - 1, max(new))
                    engine.untagged(self.recent.count(view.uids), Atom("RECENT"))  # RFC 3501 7.3.2
            self.announce_flags(engine)  # before a FETCH shows a new keyword
            await self._announce_fetches(engine, updated, turn)
            for ctx in list(self.contexts.values()):  # after EXISTS (RFC 5267 4.3.3)
                await ctx.refresh(engine, backend, self, touched)
        else:
            if allow_expunge and self.pending_expunge:
                gone, self.pending_expunge = list(self.pending_expunge), set()
                await self.announce_expunge(engine, gone, turn)
            self.announce_flags(engine)  # keywords seen by a command's own reads
        self.hold(backend)
        self._count_kept()

    def _count_kept(self) -> None:
        """A cache kept through IDLE grew by the new messages (or shrank by
        the expunged): its budget counts the records it holds."""
        if self.kept is not None:
            cache = self.infos_cache
            if cache is None:
                self.kept.release(self)
            else:
                self.kept.resize(self, len(cache))

    async def _announce_fetches(self, engine: ImapEngine, updated: list[MessageRecord],
                                turn: Callable[[], Awaitable[None]] | None) -> None:
        """``* n FETCH (UID FLAGS [MODSEQ])`` for the messages of ``updated``
        (one change batch, UID order: RFC 9051 7.5.2, RFC 7162 3.2.4), in
        slices of ANNOUNCE_TURN with ``turn`` between them. What the
        session does across a turn is fixed before the first line: the
        view changes only by this session's syncs, and a change notified
        meanwhile marks the view dirty for the next sync, which reads from
        the mod-sequence this one announced (so nothing is lost or said
        twice)."""
        recent = self.recent_of(engine)
        view = self.view
        for start in range(0, len(updated), ANNOUNCE_TURN):
            if start and turn is not None:
                await turn()
            for info in updated[start : start + ANNOUNCE_TURN]:
                seq = view.seq_of(info.uid)
                if seq is None:
                    continue
                # RFC 9051 7.5.2: unsolicited FETCH must carry UID
                items: list[object] = [Atom("UID"), info.uid, Atom("FLAGS"), Raw(session_flags(info, recent))]
                if self.condstore:
                    items += [Atom("MODSEQ"), [info.modseq]]
                engine.untagged(seq, Atom("FETCH"), items)

    async def announce_expunge(self, engine: ImapEngine, uids: Sequence[int],
                               turn: Callable[[], Awaitable[None]] | None = None) -> None:
        """EXPUNGE per message, or VANISHED with QRESYNC (RFC 7162 3.2.10),
        in slices of ANNOUNCE_TURN UIDs with ``turn`` between them (another
        client expunged most of a big mailbox: 200,000 EXPUNGE lines).

        The UIDs go in ascending order; each slice takes its UIDs out of the
        view as it formats them, so every EXPUNGE carries the sequence
        number the message has when the line is sent (RFC 9051 7.5.1,
        RFC 3501 7.4.1: each EXPUNGE moves the later numbers down by one).
        No command of this session runs during a turn (its step is busy),
        so none sees the view between two slices; a change notified
        meanwhile marks the view dirty for the next sync."""
        if not uids:
            return
        gone = sorted(set(uids))
        qresync = "QRESYNC" in engine.enabled
        view = self.view
        for start in range(0, len(gone), ANNOUNCE_TURN):
            if start and turn is not None:
                self._count_kept()  # the budget sees the cache as it is during the turn
                await turn()
            part = gone[start : start + ANNOUNCE_TURN]
            for ctx in self.contexts.values():  # before their expunge (RFC 5267 4.3.4)
                ctx.expunged(engine, self, part)
            cache = self.infos_cache  # (may have gone during the turn: KeptCaches)
            if cache is not None:
                for uid in part:
                    cache.pop(uid, None)
            if qresync:
                present = [u for u in part if view.seq_of(u) is not None]
                if present:
                    view.uids = view.uids.without(present)
                    engine.untagged(Atom("VANISHED"), Atom(format_uid_set(present)))
                continue
            for seq in view.expunge(part):
                engine.untagged(seq, Atom("EXPUNGE"))
