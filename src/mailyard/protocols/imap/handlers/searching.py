"""SEARCH and UID SEARCH (RFC 9051 6.4.4), ESEARCH results (RFC 4731 /
RFC 9051 7.3.4), SEARCHRES SAVE (RFC 5182), MODSEQ (RFC 7162 3.1.5).

BODY and TEXT keys are answered by the backend's full-text index
(search_text), FROM/TO/CC/BCC/SUBJECT/HEADER by its index of header fields
(search_headers); only SENT* read header fields per message. OLDER and
YOUNGER (RFC 5032) compare with the time `ImapIO.now` gives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import commands as c
from .. import search as sr
from ..flags import RECENT

if TYPE_CHECKING:
    from ..session import ImapSession

CHARSETS = ("UTF-8", "US-ASCII")
HEADER_BATCH = 500


async def cmd_search(s: ImapSession, cmd: c.Search) -> None:
    sel, b = s.sel, s.backend
    assert sel is not None and b is not None  # the engine runs SEARCH only when selected
    if cmd.charset is not None and cmd.charset not in CHARSETS:
        # RFC 9051 6.4.4: unsupported charset -> NO [BADCHARSET (supported)]
        await s.finish("NO", "Unsupported charset", "BADCHARSET (UTF-8 US-ASCII)", allow_expunge=False)
        return
    key = cmd.key
    mod = sr.uses_modseq(key)
    if mod:
        sel.condstore = True
    infos = await sel.infos(b)
    ctx = sr.SearchContext(max_seq=len(sel.view), max_uid=sel.view.max_uid, now=s.io.now(), saved=sel.saved,
                           flags=lambda uid: infos[uid].flags)
    for name, text in sr.text_queries(key):
        ctx.text_hits[(name, text)] = await b.search_text(sel.mailbox, text, "body" if name == "BODY" else "text")
    for name, text in sr.header_queries(key):
        ctx.header_hits[(name, text)] = await b.search_headers(sel.mailbox, name, text)
    want_headers = sr.needs_headers(key)
    hits: list[tuple[int, int]] = []
    modseq = 0
    uids = list(sel.view.uids)
    # keys the indexes answer whole (the usual SUBJECT x / BODY x, UNSEEN)
    # need no per-message evaluation; messages expunged elsewhere are left out
    found = sr.match_set(key, ctx, {u for u in uids if u in infos})
    if found is not None:
        hits = [(i, u) for i, u in enumerate(uids, 1) if u in found]
        modseq = max((infos[u].modseq for _, u in hits), default=0)
        uids = []
    recent = sel.recent_of(s.engine)
    for start in range(0, len(uids), HEADER_BATCH):
        chunk = uids[start : start + HEADER_BATCH]
        derived = await b.get_derived(sel.mailbox, chunk, ("headers",)) if want_headers else {}
        for i, uid in enumerate(chunk, start + 1):
            info = infos.get(uid)
            if info is None:
                continue  # expunged elsewhere, not yet announced
            flags = info.flags
            if recent and uid in recent:
                flags = flags | RECENT  # RFC 3501 2.3.2: \Recent in this session only
            m = sr.SearchMessage(i, uid, flags, info.internal_date, info.size, info.modseq,
                                 derived.get(uid, {}).get("headers") if want_headers else None)
            if sr.matches(key, m, ctx):
                hits.append((i, uid))
                modseq = max(modseq, info.modseq)
    responses, saved = sr.result_form(cmd.tag, cmd.uid, hits, modseq, mod, cmd.return_opts, s.engine.rev2)
    if saved is not None:
        sel.saved = saved
    for parts in responses:
        s.engine.untagged(*parts)
    await s.finish("OK", f"{'UID ' if cmd.uid else ''}SEARCH completed", allow_expunge=cmd.uid)
