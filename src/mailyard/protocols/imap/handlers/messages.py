"""FETCH (RFC 9051 6.4.5, BINARY RFC 3516, CONDSTORE/QRESYNC RFC 7162),
STORE (6.4.6, UNCHANGEDSINCE), COPY/MOVE (6.4.7-8, RFC 6851, COPYUID
RFC 4315) and APPEND (6.3.12, MULTIAPPEND RFC 3502, APPENDUID, CATENATE
RFC 4469)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .. import commands as c
from .. import fetch as f
from .. import imapurl, names
from ..backend import LimitExceeded, MailboxGone, NewMessage, NoSpace, PartlyStored, RecentClaim
from ..fetch_plan import (
    HEADER_FIELDS_TEXTS,
    HEADER_LINE_WORK,
    HEADER_OCTETS_A_UNIT,
    MERGED_FIELD_WORK,
    SELECTED_FIELD_WORK,
    SELECTED_OCTETS_A_UNIT,
    FetchPlan,
    MessageParts,
    encode_items,
    index_values,
    plan,
)
from ..flags import flags_from_client, flags_reporter, session_flags
from ..response import Atom, Raw, format_uid_list_ordered, format_uid_set
from ..search import partial_slice
from ..selected import SequenceError
from .selection import highest_modseq_code

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Any

    from ..backend import ImapBackend, MessageRecord
    from ..selected import SelectedMailbox
    from ..session import ImapSession

FETCH_BATCH = 200
FIRST_BATCH = 50
# A batch that reads messages stops once their sizes, each charged as often as
# the items go through it (FetchPlan.sized), pass this (it holds at least
# one): a batch is read, decoded and formatted without a break, and the other
# connections of the event loop wait for it. One message charged more (a
# hundred BODY[] of a big one) is written item by item, with the other
# connections let in whenever this much output is queued.
FETCH_BATCH_OCTETS = 4 * 1024 * 1024
# The work (fetch_plan.FetchPlan.work: about a microsecond a unit) a FETCH
# formats between two turns of the other connections, and the most one batch
# (formatted with no break) holds, after at least one message: 3,333
# messages of index data (UID FLAGS), 200 of a typical header FETCH (the
# FETCH_BATCH of one that reads messages), 3 of a hundred HEADER.FIELDS
# items. A FETCH of less never pauses, and stays one step without a task
# switch.
FETCH_TURN = 5_000
# The most fetch-atts, and header field names in all of its HEADER.FIELDS
# lists, one FETCH may ask for (RFC 5530 LIMIT): clients ask for a dozen
# items at most (Thunderbird, Apple Mail, mbsync), a couple of dozen names.
MAX_FETCH_ATTS = 100
MAX_FETCH_FIELD_NAMES = 1000


def _batch_end(pairs: list, start: int, end: int, infos: dict, sized: int) -> int:
    """Where a batch of ``pairs[start:end]`` that reads the messages ends:
    before the one whose size (RFC822.SIZE) times ``sized`` takes the batch
    past FETCH_BATCH_OCTETS, after at least one."""
    total = 0
    for i in range(start, end):
        info = infos.get(pairs[i][1])
        total += info.size * sized if info is not None else 0
        if total > FETCH_BATCH_OCTETS and i > start:
            return i
    return end


def _selected(s: ImapSession) -> tuple[SelectedMailbox, ImapBackend]:
    sel = s.sel
    assert sel is not None and s.backend is not None  # the engine runs these only when selected
    return sel, s.backend


def _resolved(s: ImapSession, sel: SelectedMailbox, sequence_set: c.SequenceSet, uid: bool) -> list | None:
    """The (sequence number, UID) pairs a command names, or None after
    answering BAD: RFC 9051 9 (seq-number), a number beyond the mailbox size."""
    try:
        return sel.resolve(sequence_set, uid)
    except SequenceError:
        s.engine.complete("BAD", "Invalid message sequence number")
        return None


async def cmd_fetch(s: ImapSession, cmd: c.Fetch) -> None:
    sel, b = _selected(s)
    if len(cmd.atts) > MAX_FETCH_ATTS:
        s.engine.complete("NO", f"At most {MAX_FETCH_ATTS} items in one FETCH", "LIMIT")
        return
    if sum(len(a.section.fields) for a in cmd.atts if a.section is not None) > MAX_FETCH_FIELD_NAMES:
        s.engine.complete("NO", f"At most {MAX_FETCH_FIELD_NAMES} header field names in one FETCH", "LIMIT")
        return
    pairs = _resolved(s, sel, cmd.sequence_set, cmd.uid)
    if pairs is None:
        return
    p = plan(cmd.atts, cmd.uid, cmd.changed_since is not None, sel.condstore)
    if cmd.vanished and (not cmd.uid or cmd.changed_since is None or "QRESYNC" not in s.engine.enabled):
        s.engine.complete("BAD", "VANISHED needs UID FETCH with CHANGEDSINCE and QRESYNC")
        return
    if cmd.partial is not None and not cmd.uid:
        s.engine.complete("BAD", "PARTIAL needs UID FETCH")  # RFC 9394 3.3 extends UID FETCH
        return
    if p.condstore:
        sel.enable_condstore(s.engine)  # RFC 7162 3.1: MODSEQ or CHANGEDSINCE
    infos = await sel.infos(b)
    sel.announce_flags(s.engine)  # RFC 9051 7.3.5: FLAGS before a FETCH shows a new keyword
    if cmd.changed_since is not None:
        pairs = [(q, u) for q, u in pairs if u in infos and infos[u].modseq > cmd.changed_since]
        if cmd.vanished:
            # RFC 7162 3.2.6: VANISHED (EARLIER) for expunged UIDs in the set
            ch = await b.changes_since(sel.mailbox, cmd.changed_since)
            # (RFC 7162 3.2.10.1: messages no longer in the mailbox; one still
            # in this session's view is announced by VANISHED without
            # EARLIER, at the end of this UID FETCH, after its FETCH if any)
            gone = [u for u in ch.vanished
                    if sel.view.seq_of(u) is None and cmd.sequence_set.contains(u, sel.view.max_uid)]
            if gone:
                s.engine.untagged(Atom("VANISHED"), [Atom("EARLIER")], Atom(format_uid_set(gone)))
    if cmd.partial is not None:
        # RFC 9394 3.3: only the messages at those positions (1-based, or
        # counted back from the last, -1) of the ones the set selects
        pairs = partial_slice(pairs, cmd.partial)
    if p.sets_seen and not sel.readonly:
        # RFC 9051 6.4.5: BODY[...] (not PEEK) and RFC822(.TEXT) set \Seen
        unseen = [u for _, u in pairs if u in infos and "\\Seen" not in infos[u].flags]
        if unseen:
            changed, _ = await b.store_flags(sel.mailbox, unseen, ["\\Seen"], "add")
            for m in changed:
                infos[m.uid] = m
                sel.own_changes[m.uid] = m.modseq
            p = p.with_flags  # report the implicit flag change
    atts, need_raw, need_offsets, fields = p.atts, p.need_raw, p.need_offsets, p.fields
    writer = s.engine.writer
    flags_of = flags_reporter(sel.recent_of(s.engine))
    line_format = p.line_format
    values_of = index_values(atts, flags_of) if line_format is not None else None
    work = p.work  # formatting one message (units of FETCH_TURN)
    sized = max(1, p.sized)  # times the octets of a message are gone through
    # no batch holds more than a turn's work (a message at least)
    per_turn = max(1, int(FETCH_TURN // work))
    batch_size = min(FETCH_BATCH if need_raw else 1000, per_turn)
    missing = False
    # Small first batches, each written at once, so the client starts reading
    # at once and never waits while the rest is formatted (FETCH 1:* of a
    # large mailbox): 50, 200, 800 messages, then full batches; with message
    # bytes read, also no more than FETCH_BATCH_OCTETS of them, and between two
    # such batches the other connections get their turn (without, once the
    # work formatted since the last turn reaches FETCH_TURN).
    start, size = 0, min(batch_size, FIRST_BATCH)
    turn = FETCH_TURN  # work left before the next pause
    while start < len(pairs):
        end = min(len(pairs), start + size)
        if need_raw:
            end = _batch_end(pairs, start, end, infos, sized)
        batch = pairs[start:end]
        start = end
        turn -= len(batch) * work
        derived = await b.get_derived(sel.mailbox, [u for _, u in batch], fields) if fields else {}
        out: list[bytes] = []
        if line_format is not None and values_of is not None:
            for seq, uid in batch:
                info = infos.get(uid)
                if info is None:
                    missing = True  # expunged by another session, not yet announced
                    continue
                out.append(line_format % (seq, *values_of(info)))
            batch = []
        for seq, uid in batch:
            info = infos.get(uid)
            if info is None:
                missing = True  # expunged by another session, not yet announced
                continue
            d = derived.get(uid)
            msg = None
            if need_raw:
                raw = await b.read_message(sel.mailbox, uid)
                if raw is None:
                    missing = True
                    continue
                msg = MessageParts.of(raw, d, need_offsets)
                if p.field_sections and info.size * sized <= FETCH_BATCH_OCTETS:
                    # (one charged more is written item by item, each
                    # selected as it comes: _write_items)
                    turn = await _choose_fields(s, msg, p.field_sections, p.field_names, turn, out)
            try:
                if msg is not None and info.size * sized > FETCH_BATCH_OCTETS:
                    s.engine.raw(b"".join(out))
                    out = []
                    if await _write_items(s, seq, flags_of, p, info, msg, d):
                        continue
                    # part of the line was sent: it ends there, UID included
                    await s.finish("NO", "Unknown Content-Transfer-Encoding", "UNKNOWN-CTE", allow_expunge=cmd.uid)
                    return
                items = encode_items(flags_of, writer, atts, info, msg, d)
                if msg is not None:
                    msg.chosen.clear()  # the message is done with: its selections too
            except f.UnknownCTE:
                s.engine.raw(b"".join(out))
                s.engine.untagged(seq, Atom("FETCH"), [Atom("UID"), uid])
                await s.finish("NO", "Unknown Content-Transfer-Encoding", "UNKNOWN-CTE", allow_expunge=cmd.uid)
                return
            out.append(b"* %d FETCH (%s)\r\n" % (seq, b" ".join(items)))
        s.engine.raw(b"".join(out))
        if start < len(pairs):
            await (s.io.flush() if size < batch_size else s.maybe_flush())
            size = min(batch_size, size * 4)
            if need_raw or turn < min(size, len(pairs) - start) * work:
                # message bytes were read, or the next batch would take the
                # work past a turn's: the other sessions' turn
                turn = FETCH_TURN
                await s.io.pause()
    if missing and not cmd.uid:
        # A message expunged elsewhere is served until announced (RFC 2180
        # 4.1.1, selected.py); one the backend could no longer keep (a mailbox
        # renamed away) is answered as RFC 2180 4.1.3 and RFC 9051 7.1 allow:
        # the others' data, then NO; the client learns of the expunge at its
        # next command (NOOP)
        await s.finish("NO", "Some messages were expunged", "EXPUNGEISSUED", allow_expunge=False)
        return
    # RFC 9051 7.5.1 / 5.5: no EXPUNGE during FETCH; UID FETCH allows it, and a
    # UID that no longer exists is simply not reported (RFC 9051 6.4.9)
    await s.finish("OK", f"{'UID ' if cmd.uid else ''}FETCH completed", allow_expunge=cmd.uid)


async def _write_items(s: ImapSession, seq: int, flags_of: Callable[[MessageRecord], bytes], p: FetchPlan,
                       info: MessageRecord, msg: MessageParts, d: Mapping[str, Any] | None) -> bool:
    """One message's FETCH response written item by item: it may be many
    times the message (``FETCH 1 (BODY.PEEK[] BODY.PEEK[] ...)``), so no more
    than FETCH_BATCH_OCTETS and one item of it is held at once, and the other
    connections get their turn in between.

    Items are held until they pass that, and the line is begun only then, so
    a response that fits is the same line encode_items makes, and a BINARY
    item refused before anything was written raises fetch.UnknownCTE as
    encode_items does (the caller answers as for any message). Refused once
    part of the line is out, the line ends there, valid (RFC 9051 7.5.2:
    msg-att holds at least one item) and with the message's UID, as the
    one FETCH response for this message; the result is then False."""
    engine, atts = s.engine, p.atts
    held: list[bytes] = []
    size = 0
    begun = False
    left = FETCH_TURN  # work in place before the others' turn (_choose_fields)
    for i, a in enumerate(atts):
        sec = a.section
        if sec is not None and sec.text in HEADER_FIELDS_TEXTS:
            left = await _choose_fields(s, msg, (sec,), p.field_names, left, [])
        try:
            items = encode_items(flags_of, engine.writer, (a,), info, msg, d)
        except f.UnknownCTE:
            if not begun:
                raise
            if not any(b.name == "UID" for b in atts[:i]):
                held.append(b"UID %d" % info.uid)
            engine.raw(b" " + b" ".join(held) + b")\r\n" if held else b")\r\n")
            return False
        if sec is not None:
            msg.chosen.pop(sec, None)  # one item's selection held at a time
        held += items
        size += sum(map(len, items))
        if held and engine.pending + size > FETCH_BATCH_OCTETS:
            engine.raw((b" " if begun else b"* %d FETCH (" % seq) + b" ".join(held))
            begun = True
            held, size = [], 0
            await s.turn()  # ConnectionError once the client is gone
            left = FETCH_TURN
    if begun:
        engine.raw((b" " + b" ".join(held) if held else b"") + b")\r\n")
    else:
        engine.raw(b"* %d FETCH (%s)\r\n" % (seq, b" ".join(held)))
    return True


async def _choose_fields(s: ImapSession, msg: MessageParts, sections: Sequence[c.Section],
                         names: frozenset[bytes], left: float, out: list[bytes]) -> float:
    """Select the fields of a message's HEADER.FIELDS (.NOT) sections (RFC
    9051 6.4.5) ahead of encode_items, into ``msg.chosen``; ``names``: the
    field names of all the sections of the command (FetchPlan.field_names),
    what a header is cut for, once. What that costs follows the header (a
    million short fields take most of a second to cut, a fifth to select;
    a line of 20 MB tens of milliseconds to search), so the header is cut
    (fetch.ParsedHeader.cut) and each selection made (fetch.Selection) a
    slice of lines and octets at a time, charged to ``left``, the work
    (FETCH_TURN units) before the other connections' next turn, which they
    get whenever it runs out, after the response lines in ``out`` are
    queued. Returns the work left."""
    for sec in sections:
        if sec in msg.chosen:
            continue
        rng = msg.header_range(sec)
        if rng is None:
            continue  # no such part: encode_items answers an empty string
        parsed = msg.parsed_header(rng, names)
        per_line = int(HEADER_LINE_WORK * HEADER_OCTETS_A_UNIT)
        while not parsed.done:
            left = await _spent(s, left, out)
            lines, octets = parsed.cut(int(left * HEADER_OCTETS_A_UNIT), per_line)
            left -= (lines * per_line + octets) / HEADER_OCTETS_A_UNIT
        chosen = parsed.selection(sec.fields, sec.text == "HEADER.FIELDS.NOT")
        per_field = int((SELECTED_FIELD_WORK + MERGED_FIELD_WORK * math.log2(chosen.merged)) * SELECTED_OCTETS_A_UNIT)
        while not chosen.done:
            left = await _spent(s, left, out)
            fields, octets = chosen.advance(int(left * SELECTED_OCTETS_A_UNIT), per_field)
            left -= (fields * per_field + octets) / SELECTED_OCTETS_A_UNIT
        msg.chosen[sec] = chosen.data()
    return left


async def _spent(s: ImapSession, left: float, out: list[bytes]) -> float:
    """``left`` while some is; else the other connections' turn, after the
    response lines in ``out`` are queued, and a whole FETCH_TURN again."""
    if left > 0:
        return left
    if out:
        s.engine.raw(b"".join(out))
        out.clear()
    await s.turn()  # ConnectionError once the client is gone
    return FETCH_TURN


async def cmd_store(s: ImapSession, cmd: c.Store) -> None:
    sel, b = _selected(s)
    pairs = _resolved(s, sel, cmd.sequence_set, cmd.uid)
    if pairs is None:
        return
    if sel.readonly:
        await s.finish("NO", "Mailbox is read-only", "READ-ONLY", allow_expunge=False)
        return
    flags, problem = flags_from_client(cmd.flags)
    if problem:
        s.engine.complete("BAD", problem)
        return
    if cmd.unchanged_since is not None:
        sel.enable_condstore(s.engine)  # RFC 7162 3.1
    uids = [u for _, u in pairs]
    # .SILENT: the flags as this session last showed them, to tell the
    # STORE's own change from another session's to the same message
    before = await sel.infos(b) if cmd.silent else None
    known = sel.known_modseq
    partly: PartlyStored | None = None
    try:
        changed, failed = await b.store_flags(sel.mailbox, uids, flags, cmd.mode, cmd.unchanged_since)
    except LimitExceeded as exc:
        if exc.full:
            sel.keywords_full = True  # RFC 9051 7.1: the next PERMANENTFLAGS lacks \*
        raise  # NO [LIMIT] (session.py), nothing changed
    except PartlyStored as exc:
        if isinstance(exc.error, MailboxGone):
            raise exc.error from exc  # the mailbox went: nothing to tell of it
        if isinstance(exc.error, LimitExceeded) and exc.error.full:
            sel.keywords_full = True
        # RFC 9051 6.4.6: not atomic across messages; what was applied is
        # told as usual, then the NO
        changed, failed, partly = list(exc.changed), list(exc.failed), exc
    by_uid = {m.uid: m for m in changed}
    for m in changed:
        if before is not None:
            # RFC 9051 6.4.6: with or without .SILENT, a change from an
            # external source gets an untagged FETCH. The record carries it
            # at this STORE's modseq, so the sync at the end of the command
            # announces the message unless it is marked as this STORE's own:
            # only when the new flags are what the client expects from the
            # flags it was shown (a record not announced yet, modseq past
            # known_modseq, is not known to the client).
            old = before.get(m.uid)
            if old is None or old.modseq > known or m.flags != _stored(old.flags, flags, cmd.mode):
                continue
        sel.own_changes[m.uid] = m.modseq
    sel.note_flags(changed)
    report: dict[int, MessageRecord] = dict(by_uid)
    if not cmd.silent and partly is None:
        # RFC 9051 6.4.6: the updated flags of every message in the set (of
        # a STORE applied in part, of those it changed)
        infos = await sel.infos(b)
        gone = sel.pending_expunge
        for u in uids:
            # RFC 2180 4.2.1: a message expunged elsewhere keeps its flags; the
            # STORE of the others succeeds (OK) and it gets no FETCH
            if u not in report and u in infos and u not in failed and u not in gone:
                report[u] = infos[u]
    sel.announce_flags(s.engine)  # RFC 9051 7.3.5: FLAGS before a FETCH shows a new keyword
    recent = sel.recent_of(s.engine)
    for seq, uid in pairs:
        m = report.get(uid)
        if m is None:
            continue
        items: list = []
        if cmd.uid:
            items += [Atom("UID"), uid]
        if not cmd.silent:
            items += [Atom("FLAGS"), Raw(session_flags(m, recent))]
        if sel.condstore:
            # RFC 7162 3.1.3: a changed message's even with .SILENT; RFC 7162
            # 3.1: every untagged FETCH once CONDSTORE is on, so also that of
            # a message the STORE left as it was
            items += [Atom("MODSEQ"), [m.modseq]]
        if items and (not cmd.silent or uid in by_uid and sel.condstore):
            s.engine.untagged(seq, Atom("FETCH"), items)
    code = None
    if failed:
        # RFC 7162 3.1.3: MODIFIED lists what failed the UNCHANGEDSINCE test
        nums = failed if cmd.uid else [q for q, u in pairs if u in set(failed)]
        code = f"MODIFIED {format_uid_set(nums)}"
    name = f"{'UID ' if cmd.uid else ''}STORE"
    if partly is not None:
        # RFC 7162 3.1.3 allows MODIFIED with NO; else the error's own code (RFC 5530 3)
        error = partly.error
        if code is None:
            code = ("LIMIT" if isinstance(error, LimitExceeded) else
                    "UNAVAILABLE" if isinstance(error, s.config.unavailable) else None)
        await s.finish("NO", f"{name} applied to some of the messages only, then failed: {error}", code,
                       allow_expunge=cmd.uid)
        return
    await s.finish("OK", f"{name} completed", code, allow_expunge=cmd.uid)


def _stored(old: frozenset[str], flags: Iterable[str], mode: str) -> frozenset[str]:
    """The flags a STORE of ``flags`` in ``mode`` makes of ``old`` (RFC 9051 6.4.6)."""
    given = frozenset(flags)
    return old | given if mode == "add" else old - given if mode == "remove" else given


async def cmd_copy(s: ImapSession, cmd: c.Copy) -> None:
    sel, b = _selected(s)
    pairs = _resolved(s, sel, cmd.sequence_set, cmd.uid)
    if pairs is None:
        return
    if cmd.move and sel.readonly:
        await s.finish("NO", "Mailbox is read-only", "READ-ONLY")
        return
    dst = await b.get_mailbox(cmd.mailbox)
    if dst is None:
        # RFC 9051 6.4.7: TRYCREATE tells the client it may CREATE and retry;
        # not for a name no CREATE could make (e.g. not modified UTF-7)
        problem = names.name_problem(cmd.mailbox)
        await s.finish("NO", problem or "Destination mailbox does not exist", "CANNOT" if problem else "TRYCREATE")
        return
    uids = [u for _, u in pairs]
    verb = "MOVE" if cmd.move else "COPY"
    if not uids:
        await s.finish("OK", f"{verb} completed, nothing to do")
        return
    try:
        moved = await b.copy_messages(sel.mailbox, uids, dst, move=cmd.move)
    except NoSpace:
        await s.finish("NO", "Over quota", "OVERQUOTA")
        return
    code = None
    if moved:
        code = (f"COPYUID {dst.uid_validity} {format_uid_list_ordered(a for a, _ in moved)} "
                f"{format_uid_list_ordered(b for _, b in moved)}")
    if cmd.move:
        # RFC 6851 4.3: COPYUID goes in an untagged OK before the expunges
        if code:
            s.engine.untagged_status("OK", "Moved", code)
        await sel.announce_expunge(s.engine, [a for a, _ in moved], s.turn)
        code = await highest_modseq_code(s) if moved else None
        await s.finish("OK", f"{'UID ' if cmd.uid else ''}MOVE completed", code)
        return
    await s.finish("OK", f"{'UID ' if cmd.uid else ''}COPY completed", code, allow_expunge=cmd.uid)


async def _catenate(s: ImapSession, b: ImapBackend, parts: tuple[c.CatPart, ...],
                    cache: dict[tuple[int, int], MessageParts]) -> bytes | None:
    """The message an APPEND CATENATE builds (RFC 4469 5), or None after
    answering NO [BADURL url] / NO [TOOBIG] / NO [UNKNOWN-CTE]. URLs are
    looked up among the logged-in user's own mailboxes only (imapurl.py)."""
    limit = s.engine.framer.limits.max_append
    out: list[bytes] = []
    total = 0
    for part in parts:
        if part.url is None:
            if b"\0" in part.data and not part.binary:
                await s.finish("NO", "NUL octets need a literal8", "UNKNOWN-CTE")  # RFC 3516 4.4
                return None
            data = part.data
        else:
            found = await _url_data(s, b, part.url, cache)
            if found is None:
                # RFC 4469 5: a URL that names nothing (or nothing we serve)
                await s.finish("NO", "CATENATE URL not valid", f"BADURL {imapurl.response_text(part.url)}")
                return None
            data = found
        total += len(data)
        if total > limit:
            await s.finish("NO", "Message too large", "TOOBIG")  # RFC 4469 5
            return None
        out.append(data)
    data = b"".join(out)
    if not data:
        await s.finish("NO", "Empty message")
        return None
    return data


async def _url_data(s: ImapSession, b: ImapBackend, text: str,
                    cache: dict[tuple[int, int], MessageParts]) -> bytes | None:
    """The octets an IMAP URL names in the user's own mailboxes, or None."""
    url = imapurl.parse(text)
    if url is None:
        return None
    box = await b.get_mailbox(url.mailbox)
    if box is None or (url.uid_validity is not None and url.uid_validity != box.uid_validity):
        return None
    key = (box.id, url.uid)
    msg = cache.get(key)
    if msg is None:
        raw = await b.read_message(box, url.uid)
        if raw is None:
            return None
        d = (await b.get_derived(box, [url.uid], ("parts", "messages", "size"))).get(url.uid)
        if d is None:
            return None
        msg = MessageParts.of(raw, d, True)
        cache.clear()  # one message at a time: parts of it are usually named in a row
        cache[key] = msg
    sec = url.section
    if sec is not None and sec.text in HEADER_FIELDS_TEXTS:
        await _choose_fields(s, msg, (sec,), f.field_names(sec.fields), FETCH_TURN, [])
    data = msg.section(sec) if sec is not None else msg.raw
    if sec is not None:
        msg.chosen.pop(sec, None)  # the message is kept for the next part, not its selections
    if data is None:
        return None
    if url.partial is not None:
        origin, length = url.partial
        data = data[origin : origin + length if length is not None else None]
    return data


async def cmd_append(s: ImapSession, cmd: c.Append) -> None:
    b = s.backend
    assert b is not None
    box = await b.get_mailbox(cmd.mailbox)
    if box is None:
        # RFC 9051 6.3.12: TRYCREATE unless the mailbox certainly cannot be created
        problem = names.name_problem(cmd.mailbox)
        await s.finish("NO", problem or "Mailbox does not exist", "CANNOT" if problem else "TRYCREATE")
        return
    prepared = []
    cache: dict[tuple[int, int], MessageParts] = {}
    for m in cmd.messages:
        flags, problem = flags_from_client(m.flags)
        if problem:
            s.engine.complete("BAD", problem)
            return
        if m.catenate is not None:
            # each TEXT part was checked for NUL against its own literal form
            given = await _catenate(s, b, m.catenate, cache)
            if given is None:
                return  # answered
        else:
            given = m.data
            if not given:
                await s.finish("NO", "Empty message")
                return
            if b"\0" in given and not m.binary:
                # RFC 3516 4.4: NUL octets need literal8
                await s.finish("NO", "NUL octets need a literal8", "UNKNOWN-CTE")
                return
        if m.utf8 and not s.engine.utf8:
            # RFC 6855 4: the UTF8 data item is for a client that enabled
            # UTF8=ACCEPT (or IMAP4rev2, whose strings are UTF-8, RFC 9051 5.1).
            # A plain literal with 8-bit header fields is stored as given, as
            # Dovecot and Cyrus do: refusing it would make old mail with raw
            # 8-bit headers impossible to move in with legacy sync tools.
            await s.finish("NO", "The UTF8 data item needs ENABLE UTF8=ACCEPT", "CANNOT")
            return
        # RFC 3516 4.3: the server may change the transfer encoding of binary
        # data it is given, losing nothing; parts with NUL are kept as base64
        # so that BODY[] and RFC822 can send them (a string holds no NUL,
        # RFC 9051 4.3) while BINARY[] gives back the octets as appended.
        data = await b.encode_binary(given) if b"\0" in given else given
        if data is None:
            await s.finish("NO", "NUL octets outside a part's body", "UNKNOWN-CTE")
            return
        prepared.append((data, flags, m.internal_date))
    sel = s.sel
    # RFC 3501 2.3.2: the new messages are \Recent in this session, which
    # tells of them in this reply: claimed in the APPEND's own write
    recent = (RecentClaim() if sel is not None and sel.mailbox.id == box.id and not sel.readonly
              and not s.engine.rev2 else None)
    try:
        # RFC 3502 3: MULTIAPPEND is all or nothing -- one atomic store write
        uids = await b.append_messages(
            box, [NewMessage(data, frozenset(flags), date) for data, flags, date in prepared], recent=recent)
    except NoSpace:
        await s.finish("NO", "Over quota", "OVERQUOTA")
        return
    if recent is not None and recent.first is not None and sel is s.sel:
        sel.claimed_ahead = (recent.first, recent.last)
    # RFC 4315 3: APPENDUID uidvalidity uid-set
    await s.finish("OK", "APPEND completed", f"APPENDUID {box.uid_validity} {format_uid_list_ordered(uids)}")
