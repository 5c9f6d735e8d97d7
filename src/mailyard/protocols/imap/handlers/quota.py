"""QUOTA (RFC 9208): GETQUOTA, GETQUOTAROOT and SETQUOTA.

Every account has one quota root, named "" (as in RFC 9208 / RFC 2087's
examples of a per-user root), holding every mailbox of the account. Its
resources are STORAGE (RFC 9208 5.1: the RFC822.SIZE of every message, in
units of 1024 octets) and MESSAGE (5.2: the number of messages), each
reported only when the operator set a limit on it (``mailyard user quota``).
An account without limits has no quota root: GETQUOTAROOT answers with none
and GETQUOTA "" with NO [NONEXISTENT].

Only the operator sets limits: SETQUOTA is answered NO [NOPERM] (RFC 9208
4.1.3 lets a server refuse it; QUOTASET is not advertised).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import commands as c
from ..response import Atom, Mailbox

if TYPE_CHECKING:
    from ..backend import ImapBackend, QuotaRecord
    from ..session import ImapSession

ROOT = ""  # the account's one quota root


def kib(octets: int) -> int:
    """Octets as RFC 9208 5.1 counts STORAGE: units of 1024 octets, rounded
    up, so that a mailbox holding anything never shows as empty."""
    return -(-octets // 1024)


def resources(q: QuotaRecord) -> list[object]:
    """The quota-list of RFC 9208 4.3.1: (name usage limit) for each resource
    with a limit; a STORAGE limit is rounded down to whole units."""
    out: list[object] = []
    if q.storage_limit is not None:
        out += [Atom("STORAGE"), kib(q.storage_used), q.storage_limit // 1024]
    if q.messages_limit is not None:
        out += [Atom("MESSAGE"), q.messages_used, q.messages_limit]
    return out


def _backend(s: ImapSession) -> ImapBackend:
    assert s.backend is not None  # the engine runs these only when authenticated
    return s.backend


async def cmd_getquotaroot(s: ImapSession, cmd: c.Quota) -> None:
    b = _backend(s)
    box = await b.get_mailbox(cmd.mailbox)
    if box is None:
        await s.finish("NO", "Mailbox does not exist", "NONEXISTENT")
        return
    listed = resources(await b.get_quota())
    # RFC 9208 4.1.2: QUOTAROOT with the mailbox's roots, then QUOTA for each
    if listed:
        s.engine.untagged(Atom("QUOTAROOT"), Mailbox(box.name), ROOT)
        s.engine.untagged(Atom("QUOTA"), ROOT, listed)
    else:
        s.engine.untagged(Atom("QUOTAROOT"), Mailbox(box.name))
    await s.finish("OK", "GETQUOTAROOT completed")


async def cmd_getquota(s: ImapSession, cmd: c.Quota) -> None:
    listed = resources(await _backend(s).get_quota()) if cmd.root == ROOT else []
    if not listed:
        await s.finish("NO", "No such quota root", "NONEXISTENT")
        return
    s.engine.untagged(Atom("QUOTA"), ROOT, listed)  # RFC 9208 4.1.1
    await s.finish("OK", "GETQUOTA completed")


async def cmd_setquota(s: ImapSession, cmd: c.Quota) -> None:
    # RFC 9208 4.1.3: a server may refuse SETQUOTA; here the operator sets limits
    await s.finish("NO", "Quotas are set by the server's administrator", "NOPERM")
