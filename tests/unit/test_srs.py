"""SRS (mailauth/srs.py), in the libsrs2 / postsrsd format: SRS0 and SRS1
addresses, the hash and timestamp checks, the secret file, and the router
taking a good SRS address back to its original sender."""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
from pathlib import Path

import pytest

from mailyard.mailauth.srs import SECRET_FILE, SRS, SRSError, is_srs, load_secret

DAY = 86400
NOW = 1_796_428_800.0  # 2026-12-05 00:00 UTC: day 20792, 20792 % 1024 = 312 = 9*32 + 24 -> "JY"


def reference_hash(secret: bytes, *parts: str) -> str:
    """libsrs2's srs_hash_create: HMAC-SHA1 of the lower-cased parts, base64, 4 characters."""
    mac = hmac.new(secret, b"".join(p.lower().encode() for p in parts), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()[:4]


def test_srs0_format_and_round_trip() -> None:
    srs = SRS(b"s3cret")
    out = srs.forward("Carol@C.test", "a.test", now=NOW)
    assert out == f"SRS0={reference_hash(b's3cret', 'JY', 'C.test', 'Carol')}=JY=C.test=Carol@a.test"
    assert srs.reverse(out, now=NOW) == "Carol@C.test"
    # case-insensitive: an MTA may fold the local part's case
    assert srs.reverse(out.upper(), now=NOW).lower() == "carol@c.test"
    assert srs.reverse(out.lower(), now=NOW) == "carol@c.test"


def test_age_limit_21_days_and_wheel() -> None:
    srs = SRS(b"s3cret")
    out = srs.forward("carol@c.test", "a.test", now=NOW)
    assert srs.reverse(out, now=NOW + 21 * DAY) == "carol@c.test"
    with pytest.raises(SRSError, match="expired"):
        srs.reverse(out, now=NOW + 22 * DAY)
    # the 1024-day wheel: a stamp from "the future" is an old one
    with pytest.raises(SRSError, match="expired"):
        srs.reverse(out, now=NOW - DAY)
    late = srs.forward("carol@c.test", "a.test", now=NOW + 1023 * DAY)  # wraps past 0
    assert srs.reverse(late, now=NOW + 1030 * DAY) == "carol@c.test"


@pytest.mark.parametrize("forge", [
    lambda a: a.replace("=c.test=", "=d.test="),  # another domain, same hash
    lambda a: a.replace("=carol@", "=mallory@"),  # another user
    lambda a: "SRS0=AAAA" + a[9:],  # a guessed hash
    lambda a: a.replace("=JY=", "=JZ="),  # a changed stamp
])
def test_forged_addresses_are_refused(forge) -> None:  # noqa: ANN001
    srs = SRS(b"s3cret")
    good = srs.forward("carol@c.test", "a.test", now=NOW)
    with pytest.raises(SRSError):
        srs.reverse(forge(good), now=NOW)
    with pytest.raises(SRSError, match="hash"):
        SRS(b"another secret").reverse(good, now=NOW)
    for bad in ("SRS0=x@a.test", "SRS0==JY=c.test=carol@a.test", "SRS1=abcd@a.test", "carol@a.test"):
        with pytest.raises(SRSError):
            srs.reverse(bad, now=NOW)


def test_srs1_for_a_second_forwarder() -> None:
    """b.test forwards an SRS0 address of a.test: SRS1 names a.test and keeps
    a.test's part as it was; reversing gives the SRS0 address back (which
    a.test then checks with its own secret)."""
    first, second = SRS(b"secret-a"), SRS(b"secret-b")
    srs0 = first.forward("carol@c.test", "a.test", now=NOW)
    rest = srs0[4:].rpartition("@")[0]  # "=HHHH=JY=c.test=carol"
    srs1 = second.forward(srs0, "b.test", now=NOW)
    assert srs1 == f"SRS1={reference_hash(b'secret-b', 'a.test', rest)}=a.test={rest}@b.test"
    assert second.reverse(srs1, now=NOW) == srs0
    assert first.reverse(second.reverse(srs1, now=NOW), now=NOW) == "carol@c.test"
    # a third forwarder rewrites SRS1 to SRS1 pointing at the same first hop
    third = SRS(b"secret-c")
    again = third.forward(srs1, "d.test", now=NOW)
    assert again == f"SRS1={reference_hash(b'secret-c', 'a.test', rest)}=a.test={rest}@d.test"
    assert third.reverse(again, now=NOW) == srs0
    with pytest.raises(SRSError):
        third.reverse(srs1.replace("@b.test", "@d.test"), now=NOW)


def test_is_srs() -> None:
    assert is_srs("SRS0=abcd=JY=c.test=carol") and is_srs("srs1+x") and is_srs("SRS0-x")
    assert not is_srs("srs0") and not is_srs("SRS2=x") and not is_srs("carol")


def test_secret_file_is_private_and_kept(tmp_path: Path) -> None:
    secret = load_secret(tmp_path)
    path = tmp_path / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(base64.b64decode(secret)) == 32
    assert load_secret(tmp_path) == secret  # the same after a restart
