"""SEARCH and UID SEARCH (RFC 9051 6.4.4), ESEARCH results (RFC 4731 /
RFC 9051 7.3.4), SEARCHRES SAVE (RFC 5182), MODSEQ (RFC 7162 3.1.5).

BODY and TEXT keys are answered by the store's full-text index
(store.search_text), FROM/TO/CC/BCC/SUBJECT/HEADER by its index of header
fields (store.search_headers); only SENT* read header fields per message.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ...protocols.imap import commands as c
from ...protocols.imap import search as sr
from ...protocols.imap.response import Atom, format_uid_set
from .selection import message_infos

if TYPE_CHECKING:
    from .core import ImapSession

CHARSETS = ("UTF-8", "US-ASCII")
HEADER_BATCH = 500
_RECENT = frozenset({"\\Recent"})


async def cmd_search(s: ImapSession, cmd: c.Search) -> None:
    sel = s.sel
    assert sel is not None
    if cmd.charset is not None and cmd.charset not in CHARSETS:
        # RFC 9051 6.4.4: unsupported charset -> NO [BADCHARSET (supported)]
        await s.finish("NO", "Unsupported charset", "BADCHARSET (UTF-8 US-ASCII)", allow_expunge=False)
        return
    key = cmd.key
    if sr.uses_modseq(key):
        sel.condstore = True
    infos = await message_infos(s)
    ctx = sr.SearchContext(
        max_seq=len(sel.view), max_uid=sel.view.max_uid, now=time.time(), saved=sel.saved
    )
    for name, text in sr.text_queries(key):
        ctx.text_hits[(name, text)] = await s.store.search_text(
            sel.mailbox, text, "body" if name == "BODY" else "text"
        )
    for name, text in sr.header_queries(key):
        ctx.header_hits[(name, text)] = await s.store.search_headers(sel.mailbox, name, text)
    want_headers = sr.needs_headers(key)
    hits: list[tuple[int, int]] = []
    modseq = 0
    uids = list(sel.view.uids)
    # keys the indexes answer whole (the usual SUBJECT x / BODY x) need no
    # per-message evaluation; messages expunged elsewhere are left out
    found = sr.match_set(key, ctx, {u for u in uids if u in infos})
    if found is not None:
        hits = [(i, u) for i, u in enumerate(uids, 1) if u in found]
        modseq = max((infos[u].modseq for _, u in hits), default=0)
        uids = []
    recent = sel.recent if not s.engine.rev2 else None
    for start in range(0, len(uids), HEADER_BATCH):
        chunk = uids[start : start + HEADER_BATCH]
        derived = await s.store.get_derived(sel.mailbox, chunk, ("headers",)) if want_headers else {}
        for i, uid in enumerate(chunk, start + 1):
            info = infos.get(uid)
            if info is None:
                continue  # expunged elsewhere, not yet announced
            flags = info.flags
            if recent and uid in recent:
                flags = flags | _RECENT  # RFC 3501 2.3.2: \Recent in this session only
            m = sr.SearchMessage(i, uid, flags, info.internal_date, info.size, info.modseq,
                                 derived.get(uid, {}).get("headers") if want_headers else None)
            if sr.matches(key, m, ctx):
                hits.append((i, uid))
                modseq = max(modseq, info.modseq)
    nums = [u for _, u in hits] if cmd.uid else [q for q, _ in hits]
    mod = sr.uses_modseq(key)
    opts = cmd.return_opts
    if opts is None and s.engine.rev2:
        opts = ("ALL",)  # RFC 9051 6.4.4: a rev2 server answers SEARCH with ESEARCH
    elif opts is not None and not opts:
        opts = ("ALL",)  # RFC 4731 3.1 / RFC 9051 6.4.4: RETURN () means RETURN (ALL)
    if opts is None:
        parts: list = [Atom("SEARCH"), *nums]
        if mod and nums:
            parts += [[Atom("MODSEQ"), modseq]]  # RFC 7162 3.1.5
        s.engine.untagged(*parts)
    else:
        if "SAVE" in opts:
            # RFC 5182 2.4: with MIN/MAX only those are saved
            saved = [u for _, u in hits]
            if ("MIN" in opts or "MAX" in opts) and not ({"ALL", "COUNT"} & set(opts)) and saved:
                saved = sorted({x for x in (saved[0] if "MIN" in opts else None,
                                            saved[-1] if "MAX" in opts else None) if x is not None})
            sel.saved = frozenset(saved)
        if set(opts) != {"SAVE"}:
            parts = [Atom("ESEARCH"), [Atom("TAG"), cmd.tag]]
            if cmd.uid:
                parts.append(Atom("UID"))
            if nums:
                if "MIN" in opts:
                    parts += [Atom("MIN"), min(nums)]
                if "MAX" in opts:
                    parts += [Atom("MAX"), max(nums)]
                if "ALL" in opts:
                    parts += [Atom("ALL"), Atom(format_uid_set(nums))]
            if "COUNT" in opts:
                parts += [Atom("COUNT"), len(nums)]
            if mod and nums:
                parts += [Atom("MODSEQ"), modseq]
            s.engine.untagged(*parts)
    await s.finish("OK", f"{'UID ' if cmd.uid else ''}SEARCH completed", allow_expunge=cmd.uid)
