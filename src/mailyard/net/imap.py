"""IMAP service glue: the listener's protocol factory (DESIGN.md "net/").

The protocol lives in protocols/imap (sans-I/O); net/imap_session carries out
its commands against the store. This module is what server.py registers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import TYPE_CHECKING

from .imap_session.core import ImapSession

log = logging.getLogger("mailyard.imap")

if TYPE_CHECKING:
    from ..server import MailServer
    from .listener import Listener


def _pin_mmap_threshold() -> None:
    """Keep glibc from holding on to large freed blocks.

    Fixing M_MMAP_THRESHOLD (at glibc's default 128 KiB) stops glibc from
    raising it after a big block is freed, so blocks above it stay mmap()ed
    and are returned on free instead of staying resident in a thread's arena.
    It was added for argon2's ~19 MiB per verification (m=19456): 1,000 IMAP
    logins left ~40 MB resident in the hashing threads' arenas (bench/imap.py
    counted 52 KiB "per idle connection", 13 KiB of it real). Argon2id
    verifications no longer malloc that memory: auth/passwords.py lends it
    from its own bounded pool (at most 2 buffers kept, so no page faults per
    LOGIN). The pin still bounds what argon2-cffi's fallback path (argon2i,
    v=16 or non-canonical hashes) and other large short-lived allocations
    keep; the price is a fresh mapping, with its page faults, for each such
    block. Process-wide; a no-op where libc is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_mmap_threshold = -3  # <malloc.h>
        if not libc.mallopt(m_mmap_threshold, 128 * 1024):
            log.debug("mallopt(M_MMAP_THRESHOLD) refused")
    except (OSError, AttributeError):
        pass


_pin_mmap_threshold()


def imap_protocol(server: MailServer, listener: Listener) -> ImapSession:
    """The IMAP ports: 143 / 2143 (STARTTLS) and 993 / 2993 (implicit TLS, RFC 8314)."""
    return ImapSession(server, listener)
