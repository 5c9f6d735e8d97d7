"""The pooled argon2id fast path of auth/passwords.py (`_verify_fast`).

It must answer exactly like argon2-cffi's `PasswordHasher.verify` for every
stored string and password, fall back to it whenever it cannot decide, keep
at most `ARGON2_POOL_BUFFERS` working buffers, and spare a repeated
verification the ~4,900 page faults a fresh 19 MiB mapping costs.
"""

from __future__ import annotations

import base64
import itertools
import resource
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from argon2 import PasswordHasher, Type, low_level

from mailyard.auth import passwords
from mailyard.auth.passwords import hash_password, verify_password

# Small parameters keep the table fast; the current ones are covered too.
_small = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


def _reference(stored: str, password: str) -> bool:
    """What argon2-cffi says, the behaviour the fast path must reproduce."""
    try:
        return bool(passwords._hasher.verify(stored, password))
    except Exception:
        return False


def _fast(stored: str, password: str) -> bool | None:
    """The fast path's answer, or None when it declines (falls back)."""
    try:
        return passwords._verify_fast(stored, password)
    except passwords._NoFastPath:
        return None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


def _flip_b64_field(stored: str, index: int) -> str:
    """Flip one byte of the base64 field ``index`` (-1 hash, -2 salt)."""
    parts = stored.split("$")
    raw = bytearray(base64.b64decode(parts[index] + "=" * (-len(parts[index]) % 4)))
    raw[len(raw) // 2] ^= 0x01
    parts[index] = _b64(bytes(raw))
    return "$".join(parts)


def _v16_hash(password: str) -> str:
    return low_level.hash_secret(
        password.encode(), b"0123456789abcdef", time_cost=1, memory_cost=64,
        parallelism=1, hash_len=32, type=Type.ID, version=16,
    ).decode()


def _cases() -> list[tuple[str, str, str, bool]]:
    """(label, stored, password, the fast path must decide it itself)."""
    pw = "correct horse"
    small = _small.hash(pw)
    current = hash_password(pw)
    par2 = PasswordHasher(time_cost=2, memory_cost=64, parallelism=2).hash(pw)
    other_len = PasswordHasher(
        time_cost=1, memory_cost=32, parallelism=1, hash_len=16, salt_len=8
    ).hash(pw)
    head, _, tail = small.partition("$m=64,")
    fields = small.split("$")  # "", type, v=, params, salt, hash
    cases = [
        ("right, current parameters", current, pw, True),
        ("wrong, current parameters", current, pw + "!", True),
        ("right, small", small, pw, True),
        ("wrong, small", small, "Correct horse", True),
        ("empty password", small, "", True),
        ("password with NUL", small, pw + "\0", True),
        ("right, p=2", par2, pw, True),
        ("wrong, p=2", par2, "x", True),
        ("16-byte hash, 8-byte salt", other_len, pw, True),
        ("empty password hash", _small.hash(""), "", True),
        ("non-ASCII password", _small.hash("pässwörd ☃"), "pässwörd ☃", True),
        ("non-ASCII wrong", _small.hash("pässwörd ☃"), "passwörd ☃", True),
        ("one hash byte flipped", _flip_b64_field(small, -1), pw, True),
        ("one salt byte flipped", _flip_b64_field(small, -2), pw, True),
        ("m changed", small.replace("m=64,", "m=65,"), pw, True),
        ("t changed", small.replace(",t=1,", ",t=2,"), pw, True),
        ("p changed", small.replace(",p=1$", ",p=2$"), pw, True),
        ("current m changed", current.replace("m=19456,", "m=19457,"), pw, True),
        # Not decided by the fast path: argon2-cffi's verify answers.
        ("argon2i", PasswordHasher(time_cost=1, memory_cost=64, type=Type.I).hash(pw), pw, False),
        ("argon2d", PasswordHasher(time_cost=1, memory_cost=64, type=Type.D).hash(pw), pw, False),
        ("argon2id v=16", _v16_hash(pw), pw, False),
        ("argon2id v=16 wrong", _v16_hash(pw), "x", False),
        ("no version field", small.replace("$v=19", ""), pw, False),
        ("leading zero", small.replace("m=64,", "m=064,"), pw, False),
        ("padded base64", small + "=", pw, False),
        ("trailing NUL", small + "\0", pw, False),
        ("trailing garbage", small + "$x", pw, False),
        ("extra field", f"{head}$m=64,t=1,p=1,data=AAAA${tail.split('$', 1)[1]}", pw, False),
        ("type prefix renamed", small.replace("argon2id", "argon2ix"), pw, False),
        ("m too small", small.replace("m=64,", "m=1,"), pw, False),
        ("m over 32 bits", small.replace("m=64,", "m=4294967296,"), pw, False),
        ("salt too short", "$".join(fields[:4] + [_b64(b"abcd"), fields[5]]), pw, False),
        ("hash truncated to 3 bytes", "$".join(fields[:5] + [_b64(b"abc")]), pw, False),
        ("truncated", small[:-10], pw, False),
        ("non-ASCII in hash", small[:-1] + "é", pw, False),
        ("lone surrogate password", small, "pw\ud800", False),
        ("dummy hash", passwords._get_dummy_hash(), pw, True),
    ]
    # A non-canonical last base64 character (non-zero trailing bits).
    last = small[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    odd = alphabet[alphabet.index(last) ^ 1]
    cases.append(("non-canonical base64 tail", small[:-1] + odd, pw, False))
    return cases


def test_fast_path_agrees_with_argon2_cffi_on_every_case() -> None:
    decided = 0
    for label, stored, password, must_decide in _cases():
        expected = _reference(stored, password)
        fast = _fast(stored, password)
        if must_decide:
            assert fast is not None, label
            decided += 1
        assert fast is None or fast == expected, label
        assert passwords._verify_hash(stored, password) == expected, label
    assert decided >= 15
    # Right answers exist on both sides of the table (not all False).
    assert _reference(hash_password("a"), "a") and _fast(hash_password("a"), "a")


def test_verify_password_saslprep_and_unknown_user_through_fast_path() -> None:
    # RFC 4013: SOFT HYPHEN is mapped to nothing, so "I\u00adX" == "IX".
    stored = hash_password("I\u00adX")
    assert verify_password(stored, "IX") is True
    assert verify_password(stored, "I\u00adX") is True
    assert verify_password(stored, "IY") is False
    assert verify_password(None, "IX") is False
    assert passwords._fast_path_enabled


@pytest.mark.parametrize("failure", ["binding changed", "error code", "allocation fails"])
def test_fast_path_failure_falls_back_to_argon2_cffi(
    monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    monkeypatch.setattr(passwords, "_fast_path_enabled", True)
    stored = _small.hash("pw")
    used: list[str] = []
    real_verify = passwords._hasher.verify

    class Spy:
        def verify(self, h: str, p: str) -> bool:
            used.append(h)
            return real_verify(h, p)

    monkeypatch.setattr(passwords, "_hasher", Spy())
    if failure == "binding changed":
        def core(ctx: Any, type_: int) -> int:
            raise AttributeError("argon2_context has no field 'allocate_cbk'")
        monkeypatch.setattr(low_level, "core", core)
    elif failure == "error code":
        monkeypatch.setattr(low_level, "core", lambda ctx, t: low_level.lib.ARGON2_INCORRECT_TYPE)
    else:
        def take(ffi: Any, size: int) -> Any:
            raise MemoryError("no memory")
        monkeypatch.setattr(passwords._pool, "take", take)
    assert verify_password(stored, "pw") is True
    assert verify_password(stored, "wrong") is False
    assert used == [stored, stored]
    # A changed binding switches the fast path off; a failed call does not.
    assert passwords._fast_path_enabled is (failure != "binding changed")
    assert passwords._pool.held()[1] == 0


def test_pool_keeps_at_most_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four verifications at once borrow four buffers; two are kept after."""
    pool = passwords._BufferPool(passwords._pool.size, passwords.ARGON2_POOL_BUFFERS)
    monkeypatch.setattr(passwords, "_pool", pool)
    together = threading.Barrier(4)
    calls = itertools.count()
    real_take = pool.take
    most_lent = 0

    def take(ffi: Any, size: int) -> Any:
        nonlocal most_lent
        pointer = real_take(ffi, size)
        most_lent = max(most_lent, pool.held()[1])
        if next(calls) < 4:
            together.wait(timeout=10)  # the first four hold their buffers at once
        return pointer

    monkeypatch.setattr(pool, "take", take)
    stored = hash_password("pw")
    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda i: verify_password(stored, "pw" if i % 2 else "no"), range(12)))
    assert results == [i % 2 == 1 for i in range(12)]
    assert most_lent == 4
    assert pool.held() == (passwords.ARGON2_POOL_BUFFERS, 0)


async def test_pool_bound_on_the_login_executor() -> None:
    import asyncio

    stored = hash_password("pw")
    oks = await asyncio.gather(*(passwords.verify_password_async(stored, "pw") for _ in range(8)))
    assert all(oks)
    kept, lent = passwords._pool.held()
    assert 1 <= kept <= passwords.ARGON2_POOL_BUFFERS and lent == 0


_FAULTS_SCRIPT = """
import resource, sys
import mailyard.server
mailyard.server.pin_mmap_threshold()  # the process-wide mallopt the server runs with
from mailyard.auth import passwords
passwords._fast_path_enabled = sys.argv[1] == "fast"
stored = passwords.hash_password("pw")
assert passwords.verify_password(stored, "pw")
before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
assert passwords.verify_password(stored, "pw")
print(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
"""


@pytest.mark.skipif(not hasattr(resource, "RUSAGE_THREAD"), reason="Linux getrusage")
def test_second_verification_takes_no_page_faults() -> None:
    """In the server's malloc setting (server.py pins the mmap threshold at
    start-up, hence a fresh interpreter), argon2-cffi's own path maps 19 MiB
    afresh each time: ~4,900 minor faults. The pooled buffer is resident."""
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS_SCRIPT, "fast"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    faults = int(out.stdout)
    assert faults < 500, faults


async def test_pool_unmaps_its_buffers_once_logins_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kept buffers serve a burst of logins; once no verification has ended
    for ARGON2_POOL_IDLE_SECONDS they are unmapped, so logged-in idle
    sessions leave no hash memory behind."""
    import asyncio
    import time

    monkeypatch.setattr(passwords, "ARGON2_POOL_IDLE_SECONDS", 0.05)
    pool = passwords._BufferPool(passwords._pool.size, passwords.ARGON2_POOL_BUFFERS)
    monkeypatch.setattr(passwords, "_pool", pool)
    stored = hash_password("pw")
    oks = await asyncio.gather(*(passwords.verify_password_async(stored, "pw") for _ in range(4)))
    assert all(oks)
    assert pool.held()[0] >= 1  # kept for the next login of the burst
    deadline = time.monotonic() + 10
    while pool.held() != (0, 0) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert pool.held() == (0, 0)
    # The next login maps a buffer again and keeps it for a while.
    assert await passwords.verify_password_async(stored, "pw")
    assert pool.held() == (1, 0)
