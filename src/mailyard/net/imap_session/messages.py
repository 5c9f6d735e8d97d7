"""FETCH (RFC 9051 6.4.5, BINARY RFC 3516, CONDSTORE/QRESYNC RFC 7162),
STORE (6.4.6, UNCHANGEDSINCE), COPY/MOVE (6.4.7-8, RFC 6851, COPYUID
RFC 4315) and APPEND (6.3.12, MULTIAPPEND RFC 3502, APPENDUID)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ...message.derived import Derived
from ...protocols.imap import commands as c
from ...protocols.imap import fetch as f
from ...protocols.imap.response import (
    Atom,
    Literal8,
    Raw,
    Writer,
    format_uid_list_ordered,
    format_uid_set,
)
from ...protocols.imap.selected import SequenceError
from ...store.api import AppendItem, MessageInfo, NotFound, StorageFull
from .core import flags_from_client, flags_reporter, session_flags
from .selection import message_infos

if TYPE_CHECKING:
    from .core import ImapSession

_BODY_ATTS = {"BODY[]", "BINARY[]", "BINARY.SIZE[]", "RFC822", "RFC822.HEADER", "RFC822.TEXT"}
FETCH_BATCH = 200
FIRST_BATCH = 50


def resolve(s: ImapSession, seqset: c.SequenceSet, uid: bool) -> list[tuple[int, int]]:
    """(seq, uid) pairs of a sequence set or uid set; raises SequenceError."""
    sel = s.sel
    assert sel is not None
    if seqset.saved:
        # RFC 5182 2.1: "$" is the saved result, in either kind of command
        pairs = [(sel.view.seq_of(u), u) for u in sorted(sel.saved)]
        return [(q, u) for q, u in pairs if q is not None]
    return sel.view.resolve_uids(seqset) if uid else sel.view.resolve_seqs(seqset)


def _seq_error(s: ImapSession) -> None:
    # RFC 9051 9 (seq-number): a number beyond the mailbox size is a BAD
    s.engine.complete("BAD", "Invalid message sequence number")


class _Message:
    """Bytes and derived data of one message, with the trace-prefix shift:
    derived offsets are into the shared body; the stored message is
    trace_prefix + body (store/api.py)."""

    def __init__(self, raw: bytes, derived: Derived | None) -> None:
        self.raw = raw
        self.derived = derived
        self.shift = len(raw) - derived.size if derived is not None else 0

    def _range(self, part: str, text: str) -> tuple[int, int] | None:
        assert self.derived is not None
        rng = self.derived.section_range(part, text)
        if rng is None:
            return None
        a, b = rng
        # offset 0 is the start of the message header, which the prefix extends
        return (a + self.shift if a else 0, b + self.shift)

    def section(self, sec: c.Section) -> bytes | None:
        part = ".".join(map(str, sec.part))
        text = sec.text or ""
        if not part and not text:
            return self.raw
        rng = self._range(part, "HEADER" if text.startswith("HEADER") else text)
        if rng is None:
            return None
        data = self.raw[rng[0] : rng[1]]
        if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            return f.header_fields(data, sec.fields, text == "HEADER.FIELDS.NOT")
        return data

    def binary(self, part: tuple[int, ...]) -> bytes | None:
        if not part:
            return self.raw
        spec = ".".join(map(str, part))
        body = self._range(spec, "")
        head = self._range(spec, "MIME")
        if body is None or head is None:
            return None
        return f.decode_cte(self.raw[body[0] : body[1]], self.raw[head[0] : head[1]])


# What each fetch-att needs from the store's derived data (store/api.py DERIVED_FIELDS).
_STRUCTURE_FIELDS = {"ENVELOPE": "envelope_imap", "BODYSTRUCTURE": "bodystructure_imap", "BODY": "body_imap"}
_OFFSET_FIELDS = ("parts", "messages", "size")
_NIL_ENVELOPE = b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
# fetch-atts answered from MessageInfo, with their response templates
_INDEX_ATTS = {"UID": b"UID %d", "FLAGS": b"FLAGS %s", "RFC822.SIZE": b"RFC822.SIZE %d",
               "INTERNALDATE": b'INTERNALDATE "%s"', "MODSEQ": b"MODSEQ (%d)"}  # RFC 7162 3.1.4.1


def _index_values(atts: tuple[c.FetchAtt, ...], flags_of: Callable[[MessageInfo], bytes]
                  ) -> Callable[[MessageInfo], tuple[object, ...]]:
    """The values for a plan's line_format, as one function of a message."""
    getters: list[Callable[[MessageInfo], object]] = []
    for a in atts:
        if a.name == "UID":
            getters.append(lambda m: m.uid)
        elif a.name == "FLAGS":
            getters.append(flags_of)
        elif a.name == "RFC822.SIZE":
            getters.append(lambda m: m.size)
        elif a.name == "INTERNALDATE":
            getters.append(lambda m: f.format_internal_date(m.internal_date).encode("ascii"))
        else:
            getters.append(lambda m: m.modseq)
    if len(getters) == 1:  # FETCH 1:* (FLAGS): no loop per message
        only = getters[0]
        return lambda m: (only(m),)
    return lambda m: tuple(g(m) for g in getters)


class _Plan:
    """What a FETCH's attribute list asks of the store, worked out once per
    distinct list (a client repeats the same few) rather than per command."""

    __slots__ = ("atts", "condstore", "fields", "line_format", "need_offsets", "need_raw", "sets_seen", "with_flags")

    def __init__(self, atts: list[c.FetchAtt], condstore: bool) -> None:
        self.atts = tuple(atts)
        self.condstore = condstore
        names = {a.name for a in atts}
        # RFC 9051 6.4.5: BODY[...] (not PEEK) and RFC822(.TEXT) set \Seen
        self.sets_seen = any(
            (a.name in ("BODY[]", "BINARY[]") and not a.peek) or a.name in ("RFC822", "RFC822.TEXT") for a in atts
        )
        self.need_raw = bool(names & _BODY_ATTS)
        # only sections inside the message need the part offsets; BODY[] / RFC822 /
        # BINARY[] of the whole message are the stored bytes as they are
        self.need_offsets = any(
            a.name in ("RFC822.HEADER", "RFC822.TEXT")
            or (a.section is not None and (a.section.part or a.section.text))
            for a in atts
        )
        fields = {_STRUCTURE_FIELDS[a.name] for a in atts if a.name in _STRUCTURE_FIELDS}
        if self.need_offsets:
            fields.update(_OFFSET_FIELDS)
        self.fields = frozenset(fields)
        # Attributes that come from the index alone (FETCH 1:* (UID FLAGS), what
        # clients sync with) are written with one format per message line.
        self.line_format: bytes | None = None
        if all(a.name in _INDEX_ATTS for a in atts):
            self.line_format = b"* %d FETCH (" + b" ".join(_INDEX_ATTS[a.name] for a in atts) + b")\r\n"
        # the same list plus FLAGS, for a FETCH that set \Seen implicitly
        self.with_flags = self if "FLAGS" in names else _Plan([*atts, c.FetchAtt("FLAGS")], condstore)


_PLANS: dict[tuple[tuple[c.FetchAtt, ...], bool, bool], _Plan] = {}


def _plan(atts: tuple[c.FetchAtt, ...], uid: bool, changed_since: bool) -> _Plan:
    key = (atts, uid, changed_since)
    plan = _PLANS.get(key)
    if plan is None:
        full = list(atts)
        names = {a.name for a in full}
        if uid and "UID" not in names:
            full.insert(0, c.FetchAtt("UID"))  # RFC 9051 6.4.9: UID FETCH always returns UID
        condstore = changed_since or "MODSEQ" in names  # RFC 7162 3.1: CONDSTORE-enabling
        if condstore and "MODSEQ" not in names:
            full.append(c.FetchAtt("MODSEQ"))
        plan = _Plan(full, condstore)
        if len(atts) + sum(len(a.section.fields) for a in atts if a.section) <= 32:  # bounded memory
            if len(_PLANS) >= 256:
                _PLANS.clear()
            _PLANS[key] = plan
    return plan


async def cmd_fetch(s: ImapSession, cmd: c.Fetch) -> None:
    sel = s.sel
    assert sel is not None
    try:
        pairs = resolve(s, cmd.sequence_set, cmd.uid)
    except SequenceError:
        _seq_error(s)
        return
    plan = _plan(cmd.atts, cmd.uid, cmd.changed_since is not None)
    if plan.condstore:
        sel.condstore = True  # RFC 7162 3.1: CONDSTORE-enabling commands
    if cmd.vanished and (not cmd.uid or cmd.changed_since is None or "QRESYNC" not in s.engine.enabled):
        s.engine.complete("BAD", "VANISHED needs UID FETCH with CHANGEDSINCE and QRESYNC")
        return
    infos = await message_infos(s)
    if cmd.changed_since is not None:
        pairs = [(q, u) for q, u in pairs if u in infos and infos[u].modseq > cmd.changed_since]
        if cmd.vanished:
            # RFC 7162 3.2.6: VANISHED (EARLIER) for expunged UIDs in the set
            ch = await s.store.changes_since(sel.mailbox, cmd.changed_since)
            gone = [u for u in ch.vanished if cmd.sequence_set.contains(u, sel.view.max_uid)]
            if gone:
                s.engine.untagged(Atom("VANISHED"), [Atom("EARLIER")], Atom(format_uid_set(gone)))
    if plan.sets_seen and not sel.readonly:
        # RFC 9051 6.4.5: BODY[...] (not PEEK) and RFC822(.TEXT) set \Seen
        unseen = [u for _, u in pairs if u in infos and "\\Seen" not in infos[u].flags]
        if unseen:
            changed, _ = await s.store.store_flags(sel.mailbox, unseen, ["\\Seen"], "add")
            for m in changed:
                infos[m.uid] = m
                sel.own_changes[m.uid] = m.modseq
            plan = plan.with_flags  # report the implicit flag change
    atts, need_raw, need_offsets, fields = plan.atts, plan.need_raw, plan.need_offsets, plan.fields
    writer = s.engine.writer
    flags_of = flags_reporter(s)
    line_format = plan.line_format
    values_of = _index_values(atts, flags_of) if line_format is not None else None
    batch_size = FETCH_BATCH if need_raw else 1000
    missing = False
    # Small first batches, each written at once, so the client starts reading
    # at once and never waits while the rest is formatted (FETCH 1:* of a
    # large mailbox): 50, 200, 800 messages, then full batches.
    start, size = 0, min(batch_size, FIRST_BATCH)
    while start < len(pairs):
        batch = pairs[start : start + size]
        start += size
        derived = await s.store.get_derived(sel.mailbox, [u for _, u in batch], fields) if fields else {}
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
            raw = None
            if need_raw:
                try:
                    raw = await s.store.read_message(sel.mailbox, uid)
                except NotFound:
                    missing = True
                    continue
            d = derived.get(uid)
            msg = None
            if raw is not None:
                offsets = None
                if need_offsets and d is not None:
                    offsets = Derived([], [], {k: tuple(v) for k, v in d["parts"].items()},  # type: ignore[misc]
                                      {k: tuple(v) for k, v in d["messages"].items()},  # type: ignore[misc]
                                      size=d["size"])
                msg = _Message(raw, offsets)
            try:
                items = _items(flags_of, writer, atts, info, msg, d)
            except f.UnknownCTE:
                s.engine.raw(b"".join(out))
                s.engine.untagged(seq, Atom("FETCH"), [Atom("UID"), uid])
                await s.finish("NO", "Unknown Content-Transfer-Encoding", "UNKNOWN-CTE", allow_expunge=cmd.uid)
                return
            out.append(b"* %d FETCH (%s)\r\n" % (seq, b" ".join(items)))
        s.engine.raw(b"".join(out))
        if start < len(pairs):
            await (s.flush() if size < batch_size else s.maybe_flush())
        size = min(batch_size, size * 4)
    if missing and not cmd.uid:
        # RFC 2180 4.1.3 / RFC 9051 7.1: the others' data, then NO; the client
        # learns of the expunge at its next command (NOOP)
        await s.finish("NO", "Some messages were expunged", "EXPUNGEISSUED", allow_expunge=False)
        return
    # RFC 9051 7.5.1 / 5.5: no EXPUNGE during FETCH; UID FETCH allows it, and a
    # UID that no longer exists is simply not reported (RFC 9051 6.4.9)
    await s.finish("OK", f"{'UID ' if cmd.uid else ''}FETCH completed", allow_expunge=cmd.uid)


def _items(flags_of: Callable[[MessageInfo], bytes], writer: Writer, atts: tuple[c.FetchAtt, ...],
           info: MessageInfo, msg: _Message | None, d: dict | None) -> list[bytes]:
    out: list[bytes] = []
    for a in atts:
        n = a.name
        if n == "UID":
            out.append(b"UID %d" % info.uid)
        elif n == "FLAGS":
            out.append(b"FLAGS " + flags_of(info))
        elif n == "ENVELOPE":
            out.append(b"ENVELOPE " + (d["envelope_imap"] if d else _NIL_ENVELOPE))
        elif n == "RFC822.SIZE":
            out.append(b"RFC822.SIZE %d" % info.size)
        elif n == "INTERNALDATE":
            out.append(b'INTERNALDATE "%s"' % f.format_internal_date(info.internal_date).encode("ascii"))
        elif n == "MODSEQ":
            out.append(b"MODSEQ (%d)" % info.modseq)  # RFC 7162 3.1.4.1
        elif n == "BODYSTRUCTURE":
            out.append(b"BODYSTRUCTURE " + (d["bodystructure_imap"] if d else b"NIL"))
        elif n == "BODY":
            out.append(b"BODY " + (d["body_imap"] if d else b"NIL"))
        elif n in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
            assert msg is not None
            sec = c.Section((), {"RFC822": None, "RFC822.HEADER": "HEADER", "RFC822.TEXT": "TEXT"}[n])
            out.append(n.encode("ascii") + b" " + writer.value(msg.section(sec) or b""))
        elif n == "BODY[]":
            assert msg is not None and a.section is not None
            data = msg.section(a.section)
            # RFC 9051 6.4.5: a part that does not exist reads as an empty string
            data = f.apply_partial(data or b"", a.partial)
            out.append(b"%s {%d}\r\n%s" % (f.response_name(a).encode("ascii"), len(data), data))
        elif n == "BINARY[]":
            assert msg is not None and a.section is not None
            data = msg.binary(a.section.part)
            data = f.apply_partial(data or b"", a.partial)
            out.append(f.response_name(a).encode("ascii") + b" "
                       + writer.value(Literal8(data) if b"\0" in data else data))
        elif n == "BINARY.SIZE[]":
            assert msg is not None and a.section is not None
            out.append(b"%s %d" % (f.response_name(a).encode("ascii"), len(msg.binary(a.section.part) or b"")))
    return out


async def cmd_store(s: ImapSession, cmd: c.Store) -> None:
    sel = s.sel
    assert sel is not None
    try:
        pairs = resolve(s, cmd.sequence_set, cmd.uid)
    except SequenceError:
        _seq_error(s)
        return
    if sel.readonly:
        await s.finish("NO", "Mailbox is read-only", "READ-ONLY", allow_expunge=False)
        return
    flags, problem = flags_from_client(cmd.flags)
    if problem:
        s.engine.complete("BAD", problem)
        return
    if cmd.unchanged_since is not None:
        sel.condstore = True
    uids = [u for _, u in pairs]
    changed, failed = await s.store.store_flags(sel.mailbox, uids, flags, cmd.mode, cmd.unchanged_since)
    by_uid = {m.uid: m for m in changed}
    for m in changed:
        sel.own_changes[m.uid] = m.modseq
    report: dict[int, MessageInfo] = dict(by_uid)
    if not cmd.silent:
        # RFC 9051 6.4.6: the updated flags of every message in the set
        infos = await message_infos(s)
        for u in uids:
            if u not in report and u in infos and u not in failed:
                report[u] = infos[u]
    for seq, uid in pairs:
        m = report.get(uid)
        if m is None:
            continue
        items: list = []
        if cmd.uid:
            items += [Atom("UID"), uid]
        if not cmd.silent:
            items += [Atom("FLAGS"), Raw(session_flags(s, m))]
        if sel.condstore and uid in by_uid:
            items += [Atom("MODSEQ"), [m.modseq]]  # RFC 7162 3.1.3: even with .SILENT
        if items and (not cmd.silent or uid in by_uid and sel.condstore):
            s.engine.untagged(seq, Atom("FETCH"), items)
    code = None
    if failed:
        # RFC 7162 3.1.3: MODIFIED lists what failed the UNCHANGEDSINCE test
        nums = failed if cmd.uid else [q for q, u in pairs if u in set(failed)]
        code = f"MODIFIED {format_uid_set(nums)}"
    await s.finish("OK", f"{'UID ' if cmd.uid else ''}STORE completed", code, allow_expunge=cmd.uid)


async def cmd_copy(s: ImapSession, cmd: c.Copy) -> None:
    sel = s.sel
    assert sel is not None and s.account is not None
    try:
        pairs = resolve(s, cmd.sequence_set, cmd.uid)
    except SequenceError:
        _seq_error(s)
        return
    if cmd.move and sel.readonly:
        await s.finish("NO", "Mailbox is read-only", "READ-ONLY")
        return
    dst = await s.store.get_mailbox(s.account.id, cmd.mailbox)
    if dst is None:
        # RFC 9051 6.4.7: TRYCREATE tells the client it may CREATE and retry
        await s.finish("NO", "Destination mailbox does not exist", "TRYCREATE")
        return
    uids = [u for _, u in pairs]
    verb = "MOVE" if cmd.move else "COPY"
    if not uids:
        await s.finish("OK", f"{verb} completed, nothing to do")
        return
    try:
        moved = await s.store.copy_messages(sel.mailbox, uids, dst, move=cmd.move)
    except StorageFull:
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
        s.announce_expunge([a for a, _ in moved])
        await s.finish("OK", f"{'UID ' if cmd.uid else ''}MOVE completed")
        return
    await s.finish("OK", f"{'UID ' if cmd.uid else ''}COPY completed", code, allow_expunge=cmd.uid)


async def cmd_append(s: ImapSession, cmd: c.Append) -> None:
    assert s.account is not None
    box = await s.store.get_mailbox(s.account.id, cmd.mailbox)
    if box is None:
        await s.finish("NO", "Mailbox does not exist", "TRYCREATE")
        return
    prepared = []
    for m in cmd.messages:
        flags, problem = flags_from_client(m.flags)
        if problem:
            s.engine.complete("BAD", problem)
            return
        if not m.data:
            await s.finish("NO", "Empty message")
            return
        if b"\0" in m.data and not m.binary:
            # RFC 3516 4.4: NUL octets need literal8
            await s.finish("NO", "NUL octets need a literal8", "UNKNOWN-CTE")
            return
        prepared.append((m.data, flags, m.internal_date))
    try:
        # RFC 3502 3: MULTIAPPEND is all or nothing -- one atomic store write
        uids = await s.store.append_many(
            box, [AppendItem(data, frozenset(flags), date) for data, flags, date in prepared])
    except StorageFull:
        await s.finish("NO", "Over quota", "OVERQUOTA")
        return
    # RFC 4315 3: APPENDUID uidvalidity uid-set
    await s.finish("OK", "APPEND completed", f"APPENDUID {box.uid_validity} {format_uid_list_ordered(uids)}")
