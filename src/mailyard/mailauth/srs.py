"""The Sender Rewriting Scheme, in the format of libsrs2 and postsrsd.

A message that an alias or a list sends on to another server keeps its
author's envelope sender only at the price of failing SPF there (RFC 7208
1.1.3: the forwarder's address is not the author domain's). SRS rewrites
the reverse-path to an address of this server's domain that names the
original one, so SPF is checked against this server, and a bounce to it
can be sent back to the author::

    SRS0=HHHH=TT=domain=local@srs-domain        first forwarder
    SRS1=HHHH=host1==HHHH=TT=domain=local@srs-domain
                                                a forwarder of an SRS0 address

``HHHH``: the first 4 characters of the base64 HMAC-SHA1, keyed with this
server's secret, of the lower-cased parts that follow (compared without
regard to case on the way back, as libsrs2 does: some MTAs change the case
of local parts); ``TT``: the day of the rewriting, two base32 characters
(10 bits of days, a 1024-day wheel). ``reverse`` accepts an address only
with a good hash and at most ``max_age_days`` old, so nobody can use this
server to relay to an address of their choosing.

An SRS1 address reverses to the SRS0 address of the first forwarder (whose
own secret checks the rest), as libsrs2's "guarded" scheme does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from pathlib import Path

from ..fsutil import write_atomic

log = logging.getLogger("mailyard.srs")

SECRET_FILE = "srs.secret"
HASH_LENGTH = 4
MAX_AGE_DAYS = 21
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_WHEEL = 1024  # 32 * 32 days
# libsrs2: the tag is followed by one of these separators ("=" when writing).
_SEPARATORS = "=+-"


class SRSError(ValueError):
    """The address is not a valid SRS address of this server (the text says why)."""


def is_srs(local_part: str) -> bool:
    """Whether ``local_part`` has the form of an SRS0 or SRS1 address."""
    return len(local_part) > 5 and local_part[:4].upper() in ("SRS0", "SRS1") and local_part[4] in _SEPARATORS


def load_secret(data_dir: Path) -> bytes:
    """The secret in ``DATA/srs.secret``, created (mode 0600) on first use.

    The secret must outlive restarts (a bounce may come back weeks later) and
    be the same in every worker process, hence a file; two processes making
    it at once agree on whichever was linked first."""
    path = Path(data_dir) / SECRET_FILE
    try:
        data = path.read_bytes().strip()
        if len(data) >= 16:
            return data
    except FileNotFoundError:
        pass
    secret = base64.b64encode(secrets.token_bytes(32))
    try:
        write_atomic(path, secret + b"\n", exclusive=True)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_bytes().strip()
    return secret


class SRS:
    """Rewriting (``forward``) and un-rewriting (``reverse``) with one secret."""

    def __init__(self, secret: bytes, max_age_days: int = MAX_AGE_DAYS) -> None:
        if not secret:
            raise ValueError("an SRS secret must not be empty")
        self.secret = secret
        self.max_age_days = max_age_days

    # --- the parts ----------------------------------------------------------------
    def _hash(self, *parts: str) -> str:
        mac = hmac.new(self.secret, digestmod=hashlib.sha1)
        for part in parts:
            mac.update(part.lower().encode("utf-8"))
        return base64.b64encode(mac.digest()).decode("ascii")[:HASH_LENGTH]

    def _check_hash(self, given: str, *parts: str) -> None:
        if len(given) != HASH_LENGTH or not hmac.compare_digest(given.lower(), self._hash(*parts).lower()):
            raise SRSError("SRS hash does not match")

    @staticmethod
    def _stamp(now: float) -> str:
        day = int(now // 86400) % _WHEEL
        return _BASE32[day >> 5] + _BASE32[day & 31]

    def _check_stamp(self, stamp: str, now: float) -> None:
        if len(stamp) != 2 or any(c not in _BASE32 for c in stamp.upper()):
            raise SRSError("SRS timestamp is malformed")
        then = (_BASE32.index(stamp[0].upper()) << 5) | _BASE32.index(stamp[1].upper())
        today = int(now // 86400) % _WHEEL
        if (today - then) % _WHEEL > self.max_age_days:
            raise SRSError("SRS address has expired")

    # --- the two directions -----------------------------------------------------------
    def forward(self, sender: str, srs_domain: str, now: float | None = None) -> str:
        """``sender`` rewritten as an address at ``srs_domain``."""
        now = time.time() if now is None else now
        local, _, host = sender.rpartition("@")
        if not local or not host:
            raise SRSError(f"cannot rewrite {sender!r}")
        tag = local[:4].upper()
        if is_srs(local) and tag == "SRS1":
            # SRS1=HHH=host1==rest: keep host1 and rest, hash them anew
            _hash, sep, rest = local[5:].partition("=")
            host1, sep2, user = rest.partition("=")
            if not sep or not sep2 or not host1:
                raise SRSError(f"malformed SRS1 address {sender!r}")
            # user: the text after "host1=", "=HHH=TT=domain=local"
            return f"SRS1={self._hash(host1, user)}={host1}={user}@{srs_domain}"
        if is_srs(local) and tag == "SRS0":
            # an SRS0 address of another forwarder: point at it (libsrs2 "guarded")
            user = local[4:]  # "=HHH=TT=domain=local"
            return f"SRS1={self._hash(host, user)}={host}={user}@{srs_domain}"
        stamp = self._stamp(now)
        return f"SRS0={self._hash(stamp, host, local)}={stamp}={host}={local}@{srs_domain}"

    def reverse(self, address: str, now: float | None = None) -> str:
        """The address ``address`` (an SRS address of this server) was made
        from; raises ``SRSError`` for a forged, damaged or expired one."""
        now = time.time() if now is None else now
        local = address.rpartition("@")[0]
        if not is_srs(local):
            raise SRSError("not an SRS address")
        if local[:4].upper() == "SRS1":
            hash_, sep, rest = local[5:].partition("=")
            host1, sep2, user = rest.partition("=")
            if not sep or not sep2 or not host1 or not user:
                raise SRSError("malformed SRS1 address")
            self._check_hash(hash_, host1, user)
            return f"SRS0{user}@{host1}"
        parts = local[5:].split("=", 3)
        if len(parts) != 4 or not all(parts):
            raise SRSError("malformed SRS0 address")
        hash_, stamp, host, user = parts
        self._check_stamp(stamp, now)
        self._check_hash(hash_, stamp, host, user)
        return f"{user}@{host}"
