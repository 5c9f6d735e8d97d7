"""Live search and sort results: CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267
section 4).

A SEARCH or SORT with ``RETURN (UPDATE ...)`` leaves an `UpdateContext` on
the selected mailbox (``SelectedMailbox.contexts``, by the command's tag).
As the mailbox changes, the selected-state code hands each context the
messages a change touched, never the whole mailbox:

- `UpdateContext.refresh` with the index records of the messages that are
  new or changed (flags, by this session or another), after EXISTS and the
  flag FETCHes (RFC 5267 4.3.3: ADDTO with message numbers follows EXISTS);
  it evaluates the search program on those messages alone and sends
  ``* ESEARCH (TAG "t") [UID] REMOVEFROM (...) ADDTO (...)``;
- `UpdateContext.expunged` with the UIDs about to be announced expunged,
  before the EXPUNGE or VANISHED responses (RFC 5267 4.3.4: REMOVEFROM
  with message numbers precedes the expunge).

A SEARCH context's update sets carry context position 0 and are in mailbox
order (RFC 5267 4.3.3, 4.3.4: position 0 is allowed for SEARCH, and
mailbox order gives the shortest set). A SORT context carries positions in
sort order: each (position, set) pair is processed in turn by the client,
so removals are numbered as the earlier pairs left the list, and additions
are sent in ascending final position (RFC 5267 4.3.2: the results stay in
the requested order). Sort keys never depend on flags, so a message that
stays in the result never moves.

Membership is kept as 32-bit UIDs in arrays (4 bytes per result, two
arrays for a sorted context), the number of contexts per selected mailbox
is bounded (`MAX_CONTEXTS`; more get ``NO [NOUPDATE "tag"]``, RFC 5267
4.3.1), and updates end with the selection or CANCELUPDATE (RFC 5267 4.3.5).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, insort
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from . import search as sr
from .flags import RECENT
from .response import Atom, format_uid_list_ordered, format_uid_set

if TYPE_CHECKING:
    from .backend import ImapBackend, MessageRecord
    from .commands import SearchKey
    from .engine import ImapEngine
    from .selected import SelectedMailbox

# RFC 5267 4.3.1: a server MUST offer at least one updating context per
# client and SHOULD offer more; each costs 4-8 bytes per matching message
MAX_CONTEXTS = 8
# a change of more messages than this (a STORE 1:* of a big mailbox), for a
# program of one key, is evaluated through ImapIO.compute, off the event
# loop; a program of n nodes n times sooner (each is a test per message)
COMPUTE_INLINE = 2_000
_T = TypeVar("_T")
Compute = Callable[[Callable[[], _T]], Awaitable[_T]]


class UpdateContext:
    """One live result: the tag of the command that made it, whether it
    reports UIDs or message numbers, its search program, its sort keys
    (None: a SEARCH context) and its current members."""

    __slots__ = ("compute", "hits_upto", "key", "members", "nodes", "now", "order", "sc", "sort_keys", "tag", "uid")

    def __init__(self, tag: str, uid: bool, key: SearchKey, sort_keys: Sequence[Any] | None,
                 results: Iterable[int], now: Callable[[], float], sc: sr.SearchContext,
                 compute: Compute[Any]) -> None:
        self.tag = tag
        self.uid = uid
        self.key = key
        self.nodes = sr.program_size(key)[1]
        self.sort_keys = tuple(sort_keys) if sort_keys is not None else None
        ordered = list(results)
        self.members = array("I", sorted(ordered))
        # the results in sort order (SORT contexts only)
        self.order = array("I", ordered) if sort_keys is not None else None
        self.now = now
        self.compute = compute  # ImapIO.compute
        # the index answers for the text and header keys: a message's
        # content never changes, so they hold for every message up to
        # hits_upto and are asked again only when newer ones arrive (the
        # first change asks them: a context that never changes costs none)
        self.sc = sc
        self.hits_upto = 0

    def __contains__(self, uid: int) -> bool:
        i = bisect_left(self.members, uid)
        return i < len(self.members) and self.members[i] == uid

    def _head(self, sel: SelectedMailbox) -> list[object]:
        parts: list[object] = [Atom("ESEARCH"), [Atom("TAG"), self.tag]]
        if self.uid:
            parts.append(Atom("UID"))
        return parts

    def _nums(self, sel: SelectedMailbox, uids: Iterable[int]) -> list[int]:
        if self.uid:
            return list(uids)
        return [q for q in (sel.view.seq_of(u) for u in uids) if q is not None]

    def _drop(self, uids: set[int]) -> list[tuple[int, list[int]]]:
        """Remove ``uids`` (members); the REMOVEFROM pairs for a sorted
        context (position as the client's list stands when it reaches the
        pair, UIDs in sort order), or one position-0 pair of all of them."""
        self.members = array("I", (u for u in self.members if u not in uids))
        if self.order is None:
            return [(0, sorted(uids))]
        pairs: list[tuple[int, list[int]]] = []
        kept = array("I")
        removed = 0
        for i, u in enumerate(self.order):
            if u not in uids:
                kept.append(u)
                continue
            pos = i + 1 - removed  # earlier pairs already left the list
            if pairs and pairs[-1][0] == pos:  # a run: one pair
                pairs[-1][1].append(u)
            else:
                pairs.append((pos, [u]))
            removed += 1
        self.order = kept
        return pairs

    def _set(self, sel: SelectedMailbox, uids: Sequence[int]) -> Atom:
        nums = self._nums(sel, uids)
        return Atom(format_uid_list_ordered(nums) if self.order is not None else format_uid_set(nums))

    def _pairs(self, sel: SelectedMailbox, pairs: list[tuple[int, list[int]]]) -> list[object]:
        out: list[object] = []
        for pos, uids in pairs:
            out += [pos, self._set(sel, uids)]
        return out

    def expunged(self, engine: ImapEngine, sel: SelectedMailbox, uids: Iterable[int]) -> None:
        """The messages ``uids`` are about to be announced expunged: REMOVEFROM
        for those in the result, numbered as before the expunge (RFC 5267 4.3.4)."""
        gone = {u for u in uids if u in self}
        if gone:
            engine.untagged(*self._head(sel), Atom("REMOVEFROM"), self._pairs(sel, self._drop(gone)))

    async def refresh(self, engine: ImapEngine, backend: ImapBackend, sel: SelectedMailbox,
                      records: Sequence[MessageRecord]) -> None:
        """Evaluate the program on the messages ``records`` (new or changed,
        all in the view) and send what entered or left the result."""
        if not records:
            return
        sc, key = self.sc, self.key
        sc.max_seq, sc.max_uid, sc.now, sc.saved = len(sel.view), sel.view.max_uid, self.now(), sel.saved
        uids = [m.uid for m in records]
        top = max(uids)
        if top > self.hits_upto:
            # new messages: the index answers again (one query per key)
            for name, text in sr.text_queries(key):
                sc.text_hits[(name, text)] = await backend.search_text(
                    sel.mailbox, text, "body" if name == "BODY" else "text")
            for name, text in sr.header_queries(key):
                sc.header_hits[(name, text)] = await backend.search_headers(sel.mailbox, name, text)
            self.hits_upto = top
        ids = sr.id_queries(key)
        if ids:
            await _id_hits(backend, sel, uids, ids, sc)
        derived: Any = {}
        if sr.needs_headers(key):
            derived = await backend.get_derived(sel.mailbox, uids, ("headers",))
        recent = sel.recent_of(engine)

        def evaluate() -> tuple[list[int], set[int]]:
            added: list[int] = []
            removed: set[int] = set()
            for m in records:
                seq = sel.view.seq_of(m.uid)
                if seq is None:
                    continue
                flags = m.flags | RECENT if recent and m.uid in recent else m.flags
                msg = sr.SearchMessage(seq, m.uid, flags, m.internal_date, m.size, m.modseq,
                                       derived.get(m.uid, {}).get("headers") if derived else None, m.save_date)
                hit = sr.matches(key, msg, sc)
                if hit and m.uid not in self:
                    added.append(m.uid)
                elif not hit and m.uid in self:
                    removed.add(m.uid)
            return added, removed

        added, removed = await self.compute(evaluate) if len(records) * self.nodes > COMPUTE_INLINE else evaluate()
        if not added and not removed:
            return
        parts = self._head(sel)
        if removed:
            parts += [Atom("REMOVEFROM"), self._pairs(sel, self._drop(removed))]
        if added:
            parts += [Atom("ADDTO"), self._pairs(sel, await self._add(backend, sel, sorted(set(added))))]
        engine.untagged(*parts)

    async def _add(self, backend: ImapBackend, sel: SelectedMailbox, added: list[int]) -> list[tuple[int, list[int]]]:
        """Add ``added`` (ascending UIDs); the ADDTO pairs: position 0 for a
        SEARCH context, else the runs of consecutive final positions in
        ascending order, so each pair inserts where the list is already
        final before it (RFC 5267 4.3.3)."""
        for u in added:
            insort(self.members, u)
        if self.order is None:
            return [(0, added)]
        assert self.sort_keys is not None
        new = set(added)
        present = await backend.sort_order(sel.mailbox, self.sort_keys, [*self.order, *added])
        order = _keep_gone(self.order, present)
        self.order = array("I", order)
        pairs: list[tuple[int, list[int]]] = []
        for i, u in enumerate(order, 1):
            if u not in new:
                continue
            if pairs and pairs[-1][0] + len(pairs[-1][1]) == i:
                pairs[-1][1].append(u)
            else:
                pairs.append((i, [u]))
        return pairs


async def _id_hits(backend: ImapBackend, sel: SelectedMailbox, uids: list[int], ids: set[tuple[str, str]],
                   sc: sr.SearchContext) -> None:
    """RFC 8474 6: which of ``uids`` have the EMAILID / THREADID of the program."""
    field = {"EMAILID": "email_id", "THREADID": "thread_id"}
    found = await backend.object_id_hits(sel.mailbox, uids, {(field[name], value) for name, value in ids})
    for name, value in ids:
        have = found.get((field[name], value), set())
        hits = sc.id_hits.setdefault((name, value), set())
        hits.difference_update(uids)
        hits.update(have)


def _keep_gone(old: Sequence[int], present: Sequence[int]) -> list[int]:
    """``present`` (the new order, without the messages expunged elsewhere
    whose expunge this session has not announced yet) with those messages
    put back after the result they followed: the client still counts them,
    so positions must too, until their REMOVEFROM."""
    there = set(present)
    if all(u in there for u in old):
        return list(present)
    out: list[int] = []
    i = 0  # next of ``old`` to place
    for u in present:
        if i < len(old) and old[i] == u:
            i += 1
        else:
            while i < len(old) and old[i] not in there:
                out.append(old[i])
                i += 1
            if i < len(old) and old[i] == u:
                i += 1
        out.append(u)
        while i < len(old) and old[i] not in there:
            out.append(old[i])
            i += 1
    out.extend(old[i:])
    return out
