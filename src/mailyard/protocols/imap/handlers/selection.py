"""SELECT / EXAMINE (RFC 9051 6.3.2-3, CONDSTORE and QRESYNC RFC 7162 3.1.8,
3.2.5), CLOSE, UNSELECT, EXPUNGE and UID EXPUNGE (RFC 4315 2.1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import commands as c
from .. import objectid
from ..response import Atom, Mailbox, flag_list, format_uid_set
from ..selected import SelectedMailbox, message_map
from .mailboxes import mailbox_attributes

if TYPE_CHECKING:
    from ..backend import ImapBackend
    from ..session import ImapSession


def _backend(s: ImapSession) -> ImapBackend:
    assert s.backend is not None  # the engine runs these only when authenticated
    return s.backend


async def cmd_select(s: ImapSession, cmd: c.Select) -> None:
    b = _backend(s)
    eng = s.engine
    if cmd.qresync is not None and "QRESYNC" not in eng.enabled:
        # RFC 7162 3.2.5; a command answered BAD is not run: the selection stays
        eng.complete("BAD", "QRESYNC is not enabled")
        return
    had_selection = s.sel is not None
    s.sel = None  # RFC 9051 6.3.2: a SELECT always closes the current mailbox first
    if had_selection and (eng.rev2 or "QRESYNC" in eng.enabled):
        eng.untagged_status("OK", "Previous mailbox closed", "CLOSED")  # RFC 7162 3.2.11
    box = await b.get_mailbox(cmd.mailbox)
    if box is None:
        eng.complete("NO", "Mailbox does not exist", "NONEXISTENT")
        return
    # RFC 2180 4.1.1: hold what is expunged from here on before the snapshot,
    # so every message of the view stays readable until announced
    b.hold_expunged(box, 0)
    # RFC 9051 6.3.2 needs counts, UIDNEXT, flags in use: read in one snapshot;
    # the per-message index data is loaded when a command first needs it
    notes = s.notes
    try:
        summary = await b.mailbox_summary(box)
        view = await message_map(summary.uids, s.io.compute)
    except BaseException:
        # nothing selected: the hold goes, or it would keep the mailbox's
        # expunged messages until the next SELECT or the logout
        b.hold_expunged(None)
        raise
    box = summary.mailbox
    condstore = cmd.condstore or cmd.qresync is not None or "CONDSTORE" in eng.enabled
    highest = box.highest_modseq
    sel = s.sel = SelectedMailbox(box, cmd.readonly, view, highest, condstore=condstore, compute=s.io.compute)
    if s.notes != notes:
        # a change was notified while the snapshot was read (the backend's
        # read or the map may wait), before this mailbox was selected: the
        # next sync asks what changed since the snapshot
        sel.dirty = True
    sel.hold(b)
    if summary.keywords:
        sel.known_flags |= frozenset(summary.keywords)
    sel.keywords_full = summary.keywords_full
    eng.untagged(len(view), Atom("EXISTS"))
    if not eng.rev2:
        # RFC 3501 6.3.1 / 2.3.2: messages no session has seen yet are \Recent
        # here (SELECT takes the flag for this session; EXAMINE leaves it)
        await sel.claim_recent(b, None, view.max_uid)
        eng.untagged(sel.recent.count(view.uids), Atom("RECENT"))
    sel.send_flags(eng)
    if not eng.rev2:
        first_unseen = view.seq_of(summary.first_unseen) if summary.first_unseen is not None else None
        if first_unseen is not None:
            eng.untagged_status("OK", "First unseen", f"UNSEEN {first_unseen}")
    eng.untagged_status("OK", "UIDs valid", f"UIDVALIDITY {box.uid_validity}")
    eng.untagged_status("OK", "Predicted next UID", f"UIDNEXT {box.uid_next}")
    eng.untagged_status("OK", "Ok", f"MAILBOXID ({objectid.mailbox_id(box)})")  # RFC 8474 4.1
    if condstore:
        eng.untagged_status("OK", "Highest", f"HIGHESTMODSEQ {highest}")
    if eng.rev2:
        # RFC 9051 6.3.2: the LIST response gives the mailbox name's canonical
        # form, and its attributes "MUST be accurate": those LIST gives it
        eng.untagged(Atom("LIST"), await mailbox_attributes(b, box), "/", Mailbox(box.name))
    if cmd.qresync is not None and cmd.qresync.uid_validity == box.uid_validity:
        await _qresync(s, cmd.qresync)
    code = "READ-ONLY" if cmd.readonly else "READ-WRITE"
    eng.complete("OK", f"{cmd.name} completed", code)


async def _qresync(s: ImapSession, q: c.Qresync) -> None:
    """RFC 7162 3.2.5.1: VANISHED (EARLIER) then FETCH of what changed since q.modseq."""
    assert s.sel is not None and s.backend is not None
    changes = await s.backend.changes_since(s.sel.mailbox, q.modseq)
    # Read after SELECT's snapshot, the changes may hold an expunge the view
    # does not show yet: that message is in EXISTS, and its expunge is
    # announced by the next sync (VANISHED), not as one before this SELECT.
    gone = [u for u in changes.vanished if s.sel.view.seq_of(u) is None]
    if q.known_uids is not None:
        largest = max(s.sel.view.max_uid, s.sel.mailbox.uid_next - 1)
        gone = [u for u in gone if q.known_uids.contains(u, largest)]
    if gone:
        s.engine.untagged(Atom("VANISHED"), [Atom("EARLIER")], Atom(format_uid_set(gone)))
    for m in changes.changed:
        seq = s.sel.view.seq_of(m.uid)
        if seq is None:
            continue
        if q.known_uids is not None and not q.known_uids.contains(m.uid, s.sel.view.max_uid):
            continue
        s.engine.untagged(seq, Atom("FETCH"), [Atom("UID"), m.uid, Atom("FLAGS"), flag_list(m.flags),
                                               Atom("MODSEQ"), [m.modseq]])


async def cmd_close(s: ImapSession, cmd: c.Command) -> None:
    sel = s.sel
    if sel is not None and not sel.readonly and cmd.name == "CLOSE":
        # RFC 9051 6.4.1: silently expunge \Deleted messages, no EXPUNGE responses
        infos = await sel.infos(_backend(s))
        doomed = [u for u in sel.view.uids if u in infos and "\\Deleted" in infos[u].flags]
        if doomed:
            await _backend(s).expunge(sel.mailbox, doomed)
    s.sel = None
    s.engine.complete("OK", f"{cmd.name} completed")


async def cmd_expunge(s: ImapSession, cmd: c.Command) -> None:
    sel = s.sel
    assert sel is not None
    if sel.readonly:
        await s.finish("NO", "Mailbox is read-only", "READ-ONLY")
        return
    b = _backend(s)
    infos = await sel.infos(b)
    if isinstance(cmd, c.UidExpunge):
        # RFC 4315 2.1: only the given UIDs, and only if \Deleted
        candidates = [uid for _, uid in sel.view.resolve_uids(_saved(s, cmd.sequence_set))]
        doomed = [u for u in candidates if u in infos and "\\Deleted" in infos[u].flags]
    else:
        # RFC 9051 6.4.3: every \Deleted message this session knows of (in
        # its view), found by one pass over the index data
        seq_of = sel.view.seq_of
        doomed = sorted(u for u, m in infos.items() if "\\Deleted" in m.flags and seq_of(u) is not None)
    removed = await b.expunge(sel.mailbox, doomed) if doomed else []
    await sel.announce_expunge(s.engine, removed, s.turn)
    code = await highest_modseq_code(s) if removed else None
    await s.finish("OK", f"{'UID ' if cmd.uid else ''}EXPUNGE completed", code)


async def highest_modseq_code(s: ImapSession) -> str | None:
    """The HIGHESTMODSEQ response code for the tagged OK of a command that
    removed messages from the selected mailbox (EXPUNGE, UID EXPUNGE: RFC
    7162 3.2.7, 3.2.9; MOVE: RFC 6851 4.4) when QRESYNC is enabled: the
    mod-sequence this session has announced every change up to, so the
    sync (the removal's own change among them) comes first."""
    if "QRESYNC" not in s.engine.enabled or s.sel is None:
        return None
    sel = s.sel
    await s.sync(True)
    return f"HIGHESTMODSEQ {sel.known_modseq}"


def _saved(s: ImapSession, seqset: c.SequenceSet) -> c.SequenceSet:
    """Replace "$" (RFC 5182) with the saved UIDs."""
    if not seqset.saved:
        return seqset
    assert s.sel is not None
    return c.SequenceSet(tuple((u, u) for u in sorted(s.sel.saved)))
