"""The outbound signer: which domain signs a message, with which keys.

The outbound queue (delivery/queue.py) calls ``Signer.sign`` once per
message when it enters the queue (never per delivery attempt), in a worker
thread. The signing domain is the first of these that has keys in the data
directory (``keys.py``): the From domain (so the signature aligns for DMARC,
RFC 7489 3.1.1), the reverse-path domain, the server host name's domain
(for forwarded mail from elsewhere and reports). A message from none of
them goes out unsigned.

``Signer.seal`` makes the ARC set (RFC 8617) of a message that an alias or
list forwards, with the RSA key of the forwarder's own domain: the SRS
domain when one is configured, else the server host name's domain.

The active generation is read from disk on each use (one ``stat``), so
``mailyard dkim activate`` takes effect without a restart.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from ..message.address import iter_mailboxes, parse_address_list
from ..message.headers import split_fields
from ..message.parse import split_header_body
from . import arc, dkim, keys

log = logging.getLogger("mailyard.dkim")


class Signer:
    def __init__(self, data_dir: Path, hostname: str = "", authserv_id: str = "", seal_domain: str = "") -> None:
        self.data_dir = Path(data_dir)
        self.hostname = hostname.lower().rstrip(".")
        self.authserv_id = authserv_id or self.hostname
        self.seal_domain = seal_domain.lower().rstrip(".")
        self._cache: dict[str, tuple[int, keys.SigningKeys | None]] = {}
        self._lock = threading.Lock()

    def keys_for(self, domain: str) -> keys.SigningKeys | None:
        domain = domain.lower().rstrip(".")
        if not domain or "/" in domain or domain.startswith("."):
            return None
        try:
            stamp = os.stat(keys.dkim_dir(self.data_dir, domain) / "active").st_mtime_ns
        except OSError:
            return None
        with self._lock:
            hit = self._cache.get(domain)
            if hit is not None and hit[0] == stamp:
                return hit[1]
        loaded = keys.load(self.data_dir, domain)
        with self._lock:
            self._cache[domain] = (stamp, loaded)
        return loaded

    def _candidates(self, message: bytes, reverse_path: str) -> list[str]:
        header, _body = split_header_body(message)
        out: list[str] = []
        for name, value in split_fields(header):
            if name.lower() == "from":
                text = value.decode("utf-8", "replace")
                out.extend(m.addr_spec.rpartition("@")[2] for m in iter_mailboxes(parse_address_list(text)))
        if reverse_path:
            out.append(reverse_path.rpartition("@")[2])
        out.extend(self._own_domains())
        return out

    def _own_domains(self) -> list[str]:
        labels = self.hostname.split(".")
        return [".".join(labels[i:]) for i in range(len(labels) - 1)]

    def sign(self, message: bytes, reverse_path: str = "") -> bytes:
        """``message`` with the two DKIM-Signature fields prepended, or unchanged
        when no candidate domain has keys (or signing fails: the message still goes)."""
        for domain in self._candidates(message, reverse_path):
            found = self.keys_for(domain)
            if found is not None:
                try:
                    return dkim.sign(message, found) + message
                except Exception:  # noqa: BLE001 - an unsignable message is sent unsigned
                    log.exception("DKIM signing for %s failed; sending unsigned", domain)
                    return message
        return message

    def seal(self, message: bytes) -> bytes:
        """The ARC set to prepend to a forwarded ``message`` (``arc.seal``);
        ``b""`` when no own domain has keys or the message holds no results
        of this server's authserv-id (it was not checked on the MX port)."""
        for domain in ([self.seal_domain] if self.seal_domain else []) + self._own_domains():
            found = self.keys_for(domain)
            if found is not None:
                return arc.seal(message, found, self.authserv_id)
        return b""
