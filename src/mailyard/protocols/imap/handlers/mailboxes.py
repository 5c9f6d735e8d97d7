"""Mailbox commands: CREATE (RFC 6154 USE), DELETE, RENAME, SUBSCRIBE,
UNSUBSCRIBE, LIST (RFC 9051 6.3.9 with RFC 5258 LIST-EXTENDED, RFC 5819
LIST-STATUS, RFC 6154 SPECIAL-USE), LSUB (RFC 3501 6.3.9), NAMESPACE, STATUS
(RFC 9051 6.3.11 with RFC 8438 SIZE, RFC 7889 APPENDLIMIT, RFC 9208
DELETED-STORAGE)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import commands as c
from .. import names, objectid
from ..backend import BadMailboxName, LimitExceeded, MailboxExists, NoSuchMailbox
from ..response import Atom, Mailbox
from .quota import kib

if TYPE_CHECKING:
    from ..backend import ImapBackend, MailboxRecord
    from ..session import ImapSession

# RFC 6154 2 / 5.2: the special-use attributes CREATE ... (USE (...)) accepts
SPECIAL_USES = {u.lower(): u for u in ("\\Drafts", "\\Sent", "\\Trash", "\\Junk", "\\Archive", "\\All",
                                        "\\Flagged")}


def _backend(s: ImapSession) -> ImapBackend:
    assert s.backend is not None  # the engine runs these only when authenticated
    return s.backend


async def _bad_name(s: ImapSession, name: str) -> bool:
    problem = names.name_problem(name)
    if problem is None:
        return False
    await s.finish("NO", problem, "CANNOT")
    return True


async def cmd_create(s: ImapSession, cmd: c.MailboxCommand) -> None:
    b = _backend(s)
    # RFC 9051 6.3.4: a trailing delimiter only declares intent to hold inferiors
    name = cmd.mailbox.rstrip(names.DELIMITER) if cmd.mailbox != names.DELIMITER else cmd.mailbox
    if await _bad_name(s, name):
        return
    use = None
    if cmd.special_use:
        if len(cmd.special_use) > 1 or cmd.special_use[0].lower() not in SPECIAL_USES:
            await s.finish("NO", "Unsupported special-use attribute", "USEATTR")  # RFC 6154 5.3
            return
        use = SPECIAL_USES[cmd.special_use[0].lower()]
    if await b.get_mailbox(name) is not None:
        await s.finish("NO", "Mailbox already exists", "ALREADYEXISTS")
        return
    try:
        # RFC 9051 6.3.4: with the superior names as needed, in the same
        # write: refused past the bound, the command makes nothing (nothing
        # to undo, no mailbox another session may have used meanwhile)
        await b.create_mailbox(name, use)
    except MailboxExists:
        await s.finish("NO", "Mailbox already exists", "ALREADYEXISTS")
        return
    except LimitExceeded as exc:
        await s.finish("NO", str(exc), "LIMIT")  # RFC 5530 3
        return
    except BadMailboxName as exc:
        await s.finish("NO", str(exc), "CANNOT")
        return
    box = await b.get_mailbox(name)
    # RFC 8474 4.1: the new mailbox's MAILBOXID in the tagged OK
    await s.finish("OK", "CREATE completed", f"MAILBOXID ({objectid.mailbox_id(box)})" if box else None)


async def cmd_delete(s: ImapSession, cmd: c.MailboxCommand) -> None:
    b = _backend(s)
    if cmd.mailbox == "INBOX":
        await s.finish("NO", "INBOX cannot be deleted", "CANNOT")  # RFC 9051 6.3.5
        return
    box = await b.get_mailbox(cmd.mailbox)
    if box is None:
        if await b.has_inferiors(cmd.mailbox):
            # RFC 9051 6.3.5: a \Noselect name with inferiors cannot be
            # deleted; 7.1 HASCHILDREN says why
            await s.finish("NO", "Mailbox has inferior hierarchical names", "HASCHILDREN")
            return
        await s.finish("NO", "Mailbox does not exist", "NONEXISTENT")
        return
    await b.delete_mailbox(cmd.mailbox)
    if s.sel is not None and s.sel.mailbox.id == box.id:
        # This session deleted its own selected mailbox: the selection ends
        # here (RFC 9051 7.1 CLOSED); other sessions that have it selected
        # get BYE at their next command (ImapSession.references_current).
        s.sel = None
        s.engine.end_selection("Selected mailbox deleted")
    await s.finish("OK", "DELETE completed")


async def cmd_rename(s: ImapSession, cmd: c.Rename) -> None:
    b = _backend(s)
    if await _bad_name(s, cmd.new):
        return
    if await b.get_mailbox(cmd.old) is None:
        await s.finish("NO", "Mailbox does not exist", "NONEXISTENT")
        return
    if await b.get_mailbox(cmd.new) is not None:
        await s.finish("NO", "Target mailbox already exists", "ALREADYEXISTS")
        return
    if cmd.new == "INBOX" or names.is_inferior(cmd.new, cmd.old):
        await s.finish("NO", "Cannot rename there", "CANNOT")
        return
    try:
        # RFC 9051 6.3.6: with the superior names of the new one as needed,
        # in the same write, as CREATE
        await b.rename_mailbox(cmd.old, cmd.new)
    except MailboxExists:
        await s.finish("NO", "Target mailbox already exists", "ALREADYEXISTS")
        return
    except LimitExceeded as exc:
        await s.finish("NO", str(exc), "LIMIT")  # RFC 5530 3
        return
    except (BadMailboxName, NoSuchMailbox) as exc:
        await s.finish("NO", str(exc), "CANNOT")
        return
    if s.sel is not None:
        box = await b.get_mailbox_by_id(s.sel.mailbox.id)
        if box is not None:
            s.sel.mailbox = box
    await s.finish("OK", "RENAME completed")


async def mailbox_attributes(b: ImapBackend, box: MailboxRecord) -> list[Atom]:
    """The attributes a plain LIST gives an existing mailbox: whether it has
    inferiors (RFC 9051 6.3.9) and its special use (RFC 6154 2), for the LIST
    response of SELECT, whose attributes must be accurate (RFC 9051 6.3.2)."""
    attrs = [Atom("\\HasChildren" if await b.has_inferiors(box.name) else "\\HasNoChildren")]
    if box.special_use:
        attrs.append(Atom(box.special_use))
    return attrs


async def cmd_subscribe(s: ImapSession, cmd: c.MailboxCommand) -> None:
    b = _backend(s)
    # RFC 9051 6.3.7-8: subscriptions are names; one need not exist as a mailbox
    try:
        await b.set_subscribed(cmd.mailbox, cmd.name == "SUBSCRIBE")
    except BadMailboxName as exc:
        await s.finish("NO", str(exc), "CANNOT")
        return
    except LimitExceeded as exc:
        # the account has the most subscriptions allowed (RFC 5530 3)
        await s.finish("NO", str(exc), "LIMIT")
        return
    await s.finish("OK", f"{cmd.name} completed")


def _tree(boxes: list[MailboxRecord]) -> tuple[dict[str, MailboxRecord], set[str], set[str]]:
    """(existing by name, every name incl. phantom parents, names with children)."""
    existing = {b.name: b for b in boxes}
    all_names = set(existing)
    with_children: set[str] = set()
    for name in existing:
        for p in names.parents(name):
            all_names.add(p)
            with_children.add(p)
    return existing, all_names, with_children


def _order(name: str) -> tuple[bool, str]:
    return (name != "INBOX", name)


# RFC 5258 3.1 / 3.2 (with RFC 5819 STATUS and RFC 6154 SPECIAL-USE): the
# options this server knows; any other is answered BAD.
SELECT_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "STATUS", "SPECIAL-USE"})
# Patterns one LIST may give (RFC 5258 3: a list of them); each is matched
# against every mailbox and subscription name.
MAX_PATTERNS = 100
# LIST and LSUB over more names than this match and sort them off the event
# loop (``ImapIO.compute``); their lines are written LIST_TURN units of work
# at a time, the others getting their turn between (a line is a unit, a
# STATUS line, a read of the store's counts, STATUS_WORK more): 10,000
# names are some 50 ms of matching and 10,000 STATUS reads 0.3-0.8 s.
LIST_INLINE = 2_000
LIST_TURN = 1_000
STATUS_WORK = 10


async def cmd_list(s: ImapSession, cmd: c.List) -> None:
    b = _backend(s)
    eng = s.engine
    if cmd.lsub:
        return await _lsub(s, cmd)
    if not cmd.extended and cmd.patterns == ("",):
        # RFC 9051 6.3.9: empty pattern -> delimiter and root name
        eng.untagged(Atom("LIST"), [Atom("\\Noselect")], "/", "")
        await s.finish("OK", "LIST completed")
        return
    sel_opts = set(cmd.select_opts)
    ret = set(cmd.return_opts)
    if sel_opts - SELECT_OPTIONS or ("RECURSIVEMATCH" in sel_opts and not sel_opts - {"RECURSIVEMATCH", "REMOTE"}):
        eng.complete("BAD", "Invalid LIST selection options")  # RFC 5258 3.1
        return
    if ret - RETURN_OPTIONS:
        # RFC 5258 3: an unrecognized return option is answered with BAD
        eng.complete("BAD", "Invalid LIST return options")
        return
    if len(cmd.patterns) > MAX_PATTERNS:
        # each pattern is matched against every name (RFC 5530 LIMIT)
        eng.complete("NO", f"At most {MAX_PATTERNS} patterns in one LIST", "LIMIT")
        return
    boxes = await b.list_mailboxes()
    patterns = [names.compile_pattern(cmd.reference, p) for p in cmd.patterns if p]
    subscriptions = await b.list_subscriptions()

    def select() -> list[tuple[str, list[str], list, MailboxRecord | None]]:
        return _listed(boxes, set(subscriptions), patterns, sel_opts, ret, eng.rev2)

    # every name is matched against every pattern and sorted: for many
    # names, where the other connections go on meanwhile (ImapIO.compute)
    out = await s.io.compute(select) if len(boxes) + len(subscriptions) > LIST_INLINE else select()
    await _write_lines(s, out, ret, cmd.status_items)
    await s.finish("OK", "LIST completed")


def _listed(boxes: Sequence[MailboxRecord], subscribed: set[str], patterns: list, sel_opts: set[str], ret: set[str],
            rev2: bool) -> list[tuple[str, list[str], list, MailboxRecord | None]]:
    """The LIST responses (name, attributes, extended data, mailbox) in
    order, for the selection options ``sel_opts`` and return options ``ret``
    (RFC 5258): pure, so a long one runs off the event loop."""
    existing, all_names, with_children = _tree(boxes)

    def listed(name: str) -> bool:
        return any(names.matches(r, name) for r in patterns)

    childinfo: set[str] = set()
    if "SUBSCRIBED" in sel_opts:
        all_names |= subscribed  # RFC 5258 3.1: subscribed names that do not exist too
        if "RECURSIVEMATCH" in sel_opts:
            # RFC 5258 3.1, 3.5: CHILDINFO ("SUBSCRIBED") for a name matching
            # the pattern with a subscribed inferior. A name not subscribed
            # itself is returned for it only if such an inferior is not
            # returned on its own (3.5: redundant CHILDINFO is suppressed;
            # section 5 example 9).
            for sub in subscribed:
                returned = listed(sub)
                childinfo.update(p for p in names.parents(sub) if listed(p) and (p in subscribed or not returned))
            all_names |= childinfo
    out: list[tuple[str, list[str], list, MailboxRecord | None]] = []
    for name in sorted(all_names, key=_order):
        if not listed(name):
            continue
        box = existing.get(name)
        attrs: list[str] = []
        extra: list = []
        if "SUBSCRIBED" in sel_opts:
            if name in childinfo:
                extra = [[Atom('"CHILDINFO"'), ["SUBSCRIBED"]]]
            elif name not in subscribed:
                continue
        if "SPECIAL-USE" in sel_opts and (box is None or not box.special_use):
            continue
        if box is None and name not in with_children:
            attrs.append("\\NonExistent")  # subscribed only (RFC 5258 3.4 example)
        elif box is None:
            # a hierarchy level with no mailbox of its own (RFC 9051 6.3.9 \NonExistent)
            attrs += ["\\NonExistent", "\\Noselect"] if rev2 else ["\\Noselect"]
        if box is not None or name in with_children:
            attrs.append("\\HasChildren" if name in with_children else "\\HasNoChildren")
        if name in subscribed and ("SUBSCRIBED" in ret or "SUBSCRIBED" in sel_opts):
            attrs.append("\\Subscribed")
        if box is not None and box.special_use:
            attrs.append(box.special_use)  # RFC 6154 2: shown in every LIST
        out.append((name, attrs, extra, box))
    return out


async def _write_lines(s: ImapSession, out: list[tuple[str, list[str], list, MailboxRecord | None]], ret: set[str],
                       status_items: tuple[str, ...]) -> None:
    """The LIST lines, each with its STATUS (RFC 5819 2) if asked: after
    every LIST_TURN of work (a line 1, a STATUS line STATUS_WORK) the
    output is written and the other connections get their turn."""
    eng = s.engine
    status = "STATUS" in ret
    work = 0
    for name, attrs, extra, box in out:
        eng.untagged(Atom("LIST"), [Atom(a) for a in attrs], "/", Mailbox(name), *extra)
        work += 1
        if status and box is not None:
            await _status_line(s, box, status_items)
            work += STATUS_WORK
        if work >= LIST_TURN:
            work = 0
            await s.turn()
        else:
            await s.maybe_flush()


async def _lsub(s: ImapSession, cmd: c.List) -> None:
    b = _backend(s)
    eng = s.engine
    if cmd.patterns == ("",):
        eng.untagged(Atom("LSUB"), [Atom("\\Noselect")], "/", "")
        await s.finish("OK", "LSUB completed")
        return
    pattern = names.compile_pattern(cmd.reference, cmd.patterns[0])
    subscriptions = await b.list_subscriptions()

    def select() -> list[tuple[str, bool]]:
        subscribed = set(subscriptions)
        # RFC 3501 6.3.9: every subscribed name, whether or not it exists;
        # and a name the pattern stops at ("%") above a subscribed name it
        # does not reach, not itself subscribed, is returned with \Noselect
        # ("foo" for LSUB "" % when only "foo/bar" is subscribed).
        found = {name: False for name in subscribed if names.matches(pattern, name)}
        for sub in subscribed:
            if sub not in found:
                for parent in names.parents(sub):
                    if parent not in subscribed and names.matches(pattern, parent):
                        found[parent] = True
        return [(name, found[name]) for name in sorted(found, key=_order)]

    out = await s.io.compute(select) if len(subscriptions) > LIST_INLINE else select()
    for i, (name, noselect) in enumerate(out, 1):
        eng.untagged(Atom("LSUB"), [Atom("\\Noselect")] if noselect else [], "/", Mailbox(name))
        if i % LIST_TURN == 0:
            await s.turn()
    await s.finish("OK", "LSUB completed")


async def cmd_namespace(s: ImapSession, cmd: c.Command) -> None:
    # RFC 9051 6.3.10: one personal namespace, no other users', no shared
    s.engine.untagged(Atom("NAMESPACE"), [["", "/"]], None, None)
    await s.finish("OK", "NAMESPACE completed")


async def _status_line(s: ImapSession, box: MailboxRecord, items: tuple[str, ...]) -> None:
    b = _backend(s)
    st = await b.mailbox_status(box)
    values = {
        "MESSAGES": st.messages, "UIDNEXT": st.uid_next, "UIDVALIDITY": st.uid_validity,
        "UNSEEN": st.unseen, "DELETED": st.deleted, "SIZE": st.size,
        # RFC 3501 6.3.10: messages not yet claimed as \Recent by a session
        "HIGHESTMODSEQ": st.highest_modseq, "RECENT": st.recent,
        # RFC 7889 5: the largest message APPEND takes into this mailbox
        "APPENDLIMIT": s.engine.framer.limits.max_append,
        # RFC 9208 4.2: what EXPUNGE would free, in STORAGE's units of 1024 octets
        "DELETED-STORAGE": kib(st.deleted_size),
        "MAILBOXID": [Atom(objectid.mailbox_id(box))],  # RFC 8474 4.3
    }
    data: list = []
    for item in items:
        data += [Atom(item), values[item]]
    s.engine.untagged(Atom("STATUS"), Mailbox(box.name), data)


async def cmd_status(s: ImapSession, cmd: c.Status) -> None:
    b = _backend(s)
    box = await b.get_mailbox(cmd.mailbox)
    if box is None:
        await s.finish("NO", "Mailbox does not exist", "NONEXISTENT")
        return
    if "HIGHESTMODSEQ" in cmd.items and s.sel is not None:
        s.sel.enable_condstore(s.engine)  # RFC 7162 3.1
    await _status_line(s, box, cmd.items)
    await s.finish("OK", "STATUS completed")
