"""SEARCH and UID SEARCH (RFC 9051 6.4.4), ESEARCH results (RFC 4731 /
RFC 9051 7.3.4), SEARCHRES SAVE (RFC 5182), MODSEQ (RFC 7162 3.1.5); SORT
and THREAD (RFC 5256), SORT=DISPLAY (RFC 5957) and ESORT (RFC 5267 section 3)
on the same search machinery.

SORT asks the backend for the order (``sort_order``: the store sorts by SQL
over keys kept per message); THREAD reads the keys with one backend call
(``thread_keys``: message/threadkeys.py ThreadKeys, computed once per
message from its decoded header fields) and builds the threads through
ImapIO.compute when the mailbox is big; neither reads the messages.

BODY and TEXT keys are answered by the backend's full-text index
(search_text), FROM/TO/CC/BCC/SUBJECT/HEADER by its index of header fields
(search_headers), SENT* by the day of each message's Date field
(sent_dates), EMAILID and THREADID by the backend's ids (object_id_hits);
a real backend runs those reads where they do not hold up the
event loop. The program is evaluated over the whole view at once
(search.evaluate_program), off the event loop (ImapIO.compute) for a big
mailbox or a long program; one of more than search.MAX_SEARCH_KEYS keys
is refused, NO [LIMIT] (RFC 5530). OLDER and YOUNGER (RFC 5032) compare
with the time `ImapIO.now` gives.

RETURN (UPDATE ...) on SEARCH or SORT leaves a live context on the selected
mailbox (contexts.py, RFC 5267 section 4); CANCELUPDATE ends one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from ....gcpause import gc_paused
from .. import commands as c
from .. import contexts as cx
from .. import search as sr
from .. import sort as so
from .. import thread as th
from ..flags import RECENT
from ..response import Atom
from ..search_parser import result_options

if TYPE_CHECKING:
    from ..backend import ImapBackend
    from ..selected import SelectedMailbox
    from ..session import ImapSession

CHARSETS = ("UTF-8", "US-ASCII")
# SORT / THREAD of more messages than this (some milliseconds of work) run
# through ImapIO.compute, off the event loop
COMPUTE_INLINE = 2_000
# A search key costs up to about 3 us a message (one evaluated on each
# message: SINCE, LARGER, SENT* ...; the index, flag and sequence-set keys
# less): a program whose nodes times the messages pass this (15 ms) runs
# through ImapIO.compute
EVALUATE_INLINE = 5_000
_T = TypeVar("_T")


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """No cyclic garbage collection while a SEARCH, SORT or THREAD builds
    its 100,000 small objects (no await inside): each collection would walk every
    object of the process, and the burst of allocations starts dozens of them,
    doubling the time. The thread trees' cycles are undone afterwards
    (thread.py ``release``), so nothing is left for a collection to find."""
    with gc_paused():
        yield


async def _id_hits(b: ImapBackend, sel: SelectedMailbox, ids: set[tuple[str, str]], ctx: sr.SearchContext) -> None:
    """RFC 8474 6: the messages with an EMAILID or THREADID. The ids are
    opaque hashes (objectid.py), so the selected mailbox's are made and
    compared by the backend, in one call (``object_id_hits``, off the event
    loop for a big mailbox): nothing outside the mailbox can match."""
    field = {"EMAILID": "email_id", "THREADID": "thread_id"}
    found = await b.object_id_hits(sel.mailbox, list(sel.view.uids), {(field[name], value) for name, value in ids})
    ctx.id_hits.update({(name, value): found.get((field[name], value), set()) for name, value in ids})


async def _charset_ok(s: ImapSession, charset: str | None) -> bool:
    if charset is not None and "UTF8=ACCEPT" in s.engine.enabled:
        # RFC 6855 3: after ENABLE UTF8=ACCEPT a SEARCH with a charset is
        # rejected with BAD (the charset labels conflict)
        s.engine.complete("BAD", "No CHARSET after ENABLE UTF8=ACCEPT")
        return False
    if charset is not None and charset not in CHARSETS:
        # RFC 9051 6.4.4, RFC 5256 section 3: unsupported charset -> NO [BADCHARSET (supported)]
        await s.finish("NO", "Unsupported charset", "BADCHARSET (UTF-8 US-ASCII)", allow_expunge=False)
        return False
    return True


async def _program_ok(s: ImapSession, key: c.SearchKey) -> bool:
    """A program of more than search.MAX_SEARCH_KEYS keys is refused before
    any work, NO [LIMIT] (RFC 5530), as FETCH's items are."""
    if sr.program_size(key)[0] > sr.MAX_SEARCH_KEYS:
        await s.finish("NO", f"At most {sr.MAX_SEARCH_KEYS} search keys in one program", "LIMIT",
                       allow_expunge=False)
        return False
    return True


async def _matching(s: ImapSession, key: c.SearchKey) -> tuple[list[tuple[int, int]], int, bool]:
    """The (seq, uid) pairs of the selected mailbox matching ``key``, in
    ascending order; the highest mod-sequence among them; whether the
    program used MODSEQ (RFC 7162 3.1.5)."""
    sel, b = s.sel, s.backend
    assert sel is not None and b is not None  # the engine runs SEARCH only when selected
    mod = sr.uses_modseq(key)
    if mod:
        sel.enable_condstore(s.engine)  # RFC 7162 3.1
    infos = await sel.infos(b)
    ctx = sr.SearchContext(max_seq=len(sel.view), max_uid=sel.view.max_uid, now=s.io.now(), saved=sel.saved,
                           flags=lambda uid: infos[uid].flags)
    for name, text in sr.text_queries(key):
        ctx.text_hits[(name, text)] = await b.search_text(sel.mailbox, text, "body" if name == "BODY" else "text")
    for name, text in sr.header_queries(key):
        ctx.header_hits[(name, text)] = await b.search_headers(sel.mailbox, name, text)
    ids = sr.id_queries(key)
    if ids:
        await _id_hits(b, sel, ids, ctx)
    uids = list(sel.view.uids)
    gone = frozenset(sel.pending_expunge)  # expunged elsewhere, not yet announced: left out
    recent = sel.recent_of(s.engine)
    # SENT* (RFC 9051 6.4.4): the day of each message's Date field, read by
    # the backend for the whole view in one call
    sent = (await b.sent_dates(sel.mailbox, [u for u in uids if u in infos and u not in gone])
            if sr.needs_sent(key) else {})

    def evaluate() -> tuple[list[tuple[int, int]], int]:
        # on the session's view as it stands (seq = position in ``uids``):
        # the view changes only between this session's commands
        with _no_gc():
            seqs = [i for i, u in enumerate(uids, 1) if u in infos and u not in gone]
            live = [uids[i - 1] for i in seqs]

            def messages() -> list[sr.SearchMessage]:
                out = []
                for i, uid in zip(seqs, live, strict=True):
                    info = infos[uid]
                    flags = info.flags
                    if recent and uid in recent:
                        flags = flags | RECENT  # RFC 3501 2.3.2: \Recent in this session only
                    out.append(sr.SearchMessage(i, uid, flags, info.internal_date, info.size, info.modseq, None,
                                                info.save_date, sent.get(uid)))
                return out

            hits = [(seqs[i], live[i]) for i in sr.evaluate_program(key, ctx, seqs, live, messages)]
            return hits, max((infos[u].modseq for _, u in hits), default=0)

    # a big mailbox, or a long program over a smaller one, is evaluated off
    # the event loop, as SORT and THREAD are
    if len(uids) * sr.program_size(key)[1] > EVALUATE_INLINE:
        hits, modseq = await s.io.compute(evaluate)
    else:
        hits, modseq = evaluate()
    return hits, modseq, mod


async def cmd_search(s: ImapSession, cmd: c.Search) -> None:
    if not await _charset_ok(s, cmd.charset) or not await _program_ok(s, cmd.key):
        return
    sel, b = s.sel, s.backend
    assert sel is not None and b is not None
    if not await _tag_free(s, cmd.tag, cmd.return_opts):
        return
    hits, modseq, mod = await _matching(s, cmd.key)
    modseqs = None
    if mod:
        infos = await sel.infos(b)
        modseqs = [infos[u].modseq for _, u in hits]
    responses, saved = sr.result_form(cmd.tag, cmd.uid, hits, modseq, mod, result_options(cmd.return_opts),
                                      s.engine.rev2, modseqs, cmd.partial)
    if saved is not None:
        sel.saved = saved
    for parts in responses:
        s.engine.untagged(*parts)
    _keep_context(s, cmd.tag, cmd.uid, cmd.key, None, [u for _, u in hits], cmd.return_opts)
    await s.finish("OK", f"{'UID ' if cmd.uid else ''}SEARCH completed", allow_expunge=cmd.uid)


async def _tag_free(s: ImapSession, tag: str, opts: tuple[str, ...] | None) -> bool:
    """RFC 5267 4.3: a command with UPDATE whose tag names a live context is
    rejected with BAD (its updates could not be told apart)."""
    sel = s.sel
    if opts is not None and "UPDATE" in opts and sel is not None and tag in sel.contexts:
        await s.finish("BAD", "Tag reuse: a context with this tag is being updated", allow_expunge=False)
        return False
    return True


def _keep_context(s: ImapSession, tag: str, uid: bool, key: c.SearchKey, sort_keys: tuple[object, ...] | None,
                  results: list[int], opts: tuple[str, ...] | None) -> None:
    """With RETURN (UPDATE ...): keep the result live (RFC 5267 4.3), or say
    with NO [NOUPDATE "tag"] that it is not (4.3.1: too many contexts); the
    other return options were answered either way."""
    sel = s.sel
    if opts is None or "UPDATE" not in opts or sel is None:
        return
    if len(sel.contexts) >= cx.MAX_CONTEXTS:
        s.engine.untagged_status("NO", "Too many contexts", f'NOUPDATE "{tag}"')
        return
    sc = sr.SearchContext(max_seq=len(sel.view), max_uid=sel.view.max_uid)
    sel.contexts[tag] = cx.UpdateContext(tag, uid, key, sort_keys, results, s.io.now, sc, s.io.compute)


async def cmd_cancelupdate(s: ImapSession, cmd: c.CancelUpdate) -> None:
    """CANCELUPDATE "tag" ... (RFC 5267 4.3.5): no more updates for those
    contexts. A tag that names no live context is BAD, and then none is
    cancelled."""
    sel = s.sel
    assert sel is not None  # the engine runs CANCELUPDATE only when selected
    unknown = [t for t in cmd.tags if t not in sel.contexts]
    if unknown:
        await s.finish("BAD", f"No context is being updated for tag {unknown[0][:40]}", allow_expunge=False)
        return
    for t in cmd.tags:
        del sel.contexts[t]
    await s.finish("OK", "CANCELUPDATE completed")


async def _compute(s: ImapSession, n: int, fn: Callable[[], _T]) -> _T:
    """``fn()`` for a SORT or THREAD of ``n`` messages: a big one where it
    does not hold up the other connections (ImapIO.compute), a small one in
    place (no task switch for the common case)."""
    if n > COMPUTE_INLINE:
        return await s.io.compute(fn)
    return fn()


async def cmd_sort(s: ImapSession, cmd: c.Sort) -> None:
    """SORT / UID SORT (RFC 5256 section 3): the matching messages in the
    order of the sort keys; with RETURN, ESORT's ESEARCH (RFC 5267 section 3)."""
    if not await _charset_ok(s, cmd.charset) or not await _program_ok(s, cmd.key):
        return
    sel, b = s.sel, s.backend
    assert sel is not None and b is not None
    if not await _tag_free(s, cmd.tag, cmd.return_opts):
        return
    hits, modseq, mod = await _matching(s, cmd.key)
    # the backend orders them (the store by SQL over its typed keys, off the
    # event loop for a big mailbox); equal messages in UID order, which is
    # sequence-number order (RFC 5256 section 3)
    order = await b.sort_order(sel.mailbox, cmd.keys, [u for _, u in hits]) if hits else []
    seq_of = {u: q for q, u in hits}
    ordered = [(seq_of[u], u) for u in order if u in seq_of]
    responses, saved = so.result_form(cmd.tag, cmd.uid, ordered, modseq, mod, result_options(cmd.return_opts),
                                      cmd.partial)
    if saved is not None:
        sel.saved = saved
    for parts in responses:
        s.engine.untagged(*parts)
    _keep_context(s, cmd.tag, cmd.uid, cmd.key, cmd.keys, [u for _, u in ordered], cmd.return_opts)
    await s.finish("OK", f"{'UID ' if cmd.uid else ''}SORT completed", allow_expunge=cmd.uid)


async def cmd_thread(s: ImapSession, cmd: c.Thread) -> None:
    """THREAD / UID THREAD (RFC 5256 section 3): ORDEREDSUBJECT or REFERENCES."""
    if cmd.algorithm not in th.ALGORITHMS:
        # RFC 5256 section 3: an algorithm the server does not advertise is BAD
        await s.finish("BAD", f"Unknown threading algorithm {cmd.algorithm[:20]}", allow_expunge=False)
        return
    if not await _charset_ok(s, cmd.charset) or not await _program_ok(s, cmd.key):
        return
    sel, b = s.sel, s.backend
    assert sel is not None and b is not None
    hits, _modseq, _mod = await _matching(s, cmd.key)
    found = await b.thread_keys(sel.mailbox, [u for _, u in hits]) if hits else {}

    def threads() -> str:
        with _no_gc():
            msgs = [th.ThreadMessage(q, u, *found[u]) for q, u in hits if u in found]
            roots = th.ordered_subject(msgs) if cmd.algorithm == "ORDEREDSUBJECT" else th.references(msgs)
            text = th.format_threads(roots, cmd.uid)
            th.release(roots)
            return text

    text = await _compute(s, len(hits), threads)
    s.engine.untagged(*([Atom("THREAD"), Atom(text)] if text else [Atom("THREAD")]))
    await s.finish("OK", f"{'UID ' if cmd.uid else ''}THREAD completed", allow_expunge=cmd.uid)
