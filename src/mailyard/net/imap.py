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
    """Keep glibc from holding on to argon2's memory.

    Every LOGIN verifies an argon2id hash that allocates ~19 MiB (auth/
    passwords.py, m=19456) on a thread-pool thread. glibc raises its mmap
    threshold after such a block is freed, so the next ones come from the
    thread's arena and stay resident: with 1,000 IMAP logins the server kept
    ~40 MB it no longer used (measured with bench/imap.py: 52 KiB "per idle
    connection", 13 KiB of it real). A fixed threshold (M_MMAP_THRESHOLD, the
    default 128 KiB) makes big blocks mmap()ed and returned on free. Process-
    wide and harmless elsewhere; a no-op where libc is not glibc."""
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
