"""Password storage: argon2id hashes, RFC 5803 SCRAM-SHA-256 keys, APOP secrets.

One account carries up to three credentials (store/api.py `Account`):

- ``password_hash``: argon2id (RFC 9106) in the PHC string form argon2-cffi
  writes (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``). Checked for PLAIN,
  LOGIN, IMAP LOGIN, POP3 USER/PASS and webmail.
- ``scram_sha256``: RFC 5803 ``SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>``.
  SCRAM (RFC 5802) cannot use the argon2 hash; it needs these keys, derived
  with PBKDF2-HMAC-SHA-256 when the password is set.
- ``apop_secret``: APOP (RFC 1939 section 7) needs the shared secret *in
  clear*, so we never reuse the login password for it (see `Credentials`).

Argon2 parameters (`ARGON2_TIME_COST`, `ARGON2_MEMORY_COST`, `ARGON2_PARALLELISM`):
t=2, m=19 MiB, p=1 -- the OWASP Password Storage Cheat Sheet's argon2id
configuration. Measured on the 2-core development machine: about 24 ms per
verification (t=3/m=64 MiB/p=4, argon2-cffi's default, took ~160 ms there; t=3
m=19 MiB ~41 ms). That keeps a login under ~50 ms while costing an offline
attacker 19 MiB of memory per guess. Hashes made with other parameters still
verify; `needs_rehash` tells the caller to re-hash after a successful login.

Verification is CPU-bound and deliberately slow, so protocol code must call
`verify_password_async`, which runs it on a small dedicated thread pool
(argon2-cffi releases the GIL while hashing) and never blocks the event loop.

Working memory. Each verification needs m KiB (19 MiB) of scratch memory.
Through argon2-cffi's `PasswordHasher.verify` libargon2 malloc()s it, and
under the mmap threshold the server pins (server.pin_mmap_threshold) every
malloc is a fresh mmap():
~4,900 minor page faults and ~35 ms per verification instead of ~24 ms. So
`verify_password` first tries `_verify_fast`: it parses the PHC string itself
and calls libargon2's ``argon2_ctx`` (`argon2.low_level.core`) with allocation
callbacks that lend a buffer from `_BufferPool`, which keeps at most
`ARGON2_POOL_BUFFERS` (2) buffers of the current parameters' size between
verifications -- ~38 MiB retained at most, whatever the core count; further
concurrent verifications, or hashes with other parameters, map a buffer and
unmap it when done. The kept buffers serve bursts of logins only: once no
verification has ended for `ARGON2_POOL_IDLE_SECONDS`, they are unmapped
(`verify_password_async` arms a timer on the event loop), so a server whose
sessions are logged in and idle holds no hash memory at all. The first login
after a quiet period maps its buffer afresh (~10 ms of page faults on top of
a deliberately slow check). Anything the fast path does not handle exactly (not
argon2id v=19, a non-canonical string, a libargon2 error, a changed cffi
binding) falls back to `PasswordHasher.verify`, never to "accept"; the unit
tests check that both give the same answer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import mmap
import os
import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher, low_level
from argon2.exceptions import InvalidHashError, VerificationError

from mailyard.auth.saslprep import prepare_password

log = logging.getLogger("mailyard.auth")

__all__ = [
    "ARGON2_MEMORY_COST",
    "ARGON2_PARALLELISM",
    "ARGON2_POOL_BUFFERS",
    "ARGON2_POOL_IDLE_SECONDS",
    "ARGON2_TIME_COST",
    "SCRAM_MIN_ITERATIONS",
    "Credentials",
    "ScramKeys",
    "hash_password",
    "make_apop_secret",
    "make_scram_sha256",
    "needs_rehash",
    "parse_scram_sha256",
    "scram_keys_from_password",
    "verify_password",
    "verify_password_async",
]

ARGON2_TIME_COST = 2
ARGON2_MEMORY_COST = 19 * 1024  # KiB, i.e. 19 MiB
ARGON2_PARALLELISM = 1
# Working buffers of the current parameters' size kept for reuse between
# verifications (see the module docstring): the memory retained is at most
# ARGON2_POOL_BUFFERS x ARGON2_MEMORY_COST KiB.
ARGON2_POOL_BUFFERS = 2
# Seconds without a verification after which the kept buffers are unmapped.
ARGON2_POOL_IDLE_SECONDS = 1.0

# RFC 7677 section 4: "the iteration count ... SHOULD be at least 4096".
SCRAM_MIN_ITERATIONS = 4096
SCRAM_SALT_BYTES = 16

_hasher = PasswordHasher(
    time_cost=ARGON2_TIME_COST,
    memory_cost=ARGON2_MEMORY_COST,
    parallelism=ARGON2_PARALLELISM,
)

# A hash of a random password with the current parameters. Verifying against it
# when the account does not exist costs the same as a real check, so response
# time does not reveal which user names exist. Computed on first use.
_dummy_hash: str | None = None

# Bounded pool: a flood of logins queues here instead of running dozens of
# 19 MiB hashes at once and starving the machine (and the default executor,
# which asyncio also uses for getaddrinfo).
_executor: ThreadPoolExecutor | None = None


def _get_dummy_hash() -> str:
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(24))
    return _dummy_hash


def _get_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(
            max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="mailyard-argon2"
        )
    return _executor


def hash_password(password: str) -> str:
    """Return an argon2id hash of ``password`` (SASLprep'd) for `Account.password_hash`."""
    return _hasher.hash(prepare_password(password))


def verify_password(password_hash: str | None, password: str) -> bool:
    """Check ``password`` against an argon2 hash; False on mismatch or bad hash.

    Pass ``None`` as the hash for an unknown user: a dummy hash is verified
    instead, so the call takes as long as for a real account and returns False.
    A stored value that is not an argon2 hash (``"!locked"``) is treated the same.
    Never raises for a wrong password or a malformed stored hash.
    """
    if password_hash is None or not password_hash.startswith("$argon2"):
        # Unknown user, or an account that cannot log in with a password (the
        # "!locked" postmaster, a damaged hash): the same work as a real check,
        # so neither the reply time nor the reply tells the cases apart.
        target, known = _get_dummy_hash(), False
    else:
        target, known = password_hash, True
    try:
        prepared = prepare_password(password)
    except Exception:
        # Not a valid SASLprep string: still one real verification (of the
        # raw string), so time does not tell this case apart; result False.
        _verify_hash(target, password)
        return False
    return _verify_hash(target, prepared) and known


def _verify_hash(encoded: str, password: str) -> bool:
    """One argon2 verification: the pooled fast path, else argon2-cffi's verify."""
    try:
        return _verify_fast(encoded, password)
    except _NoFastPath:
        pass
    except (AttributeError, TypeError, KeyError, low_level.ffi.error) as exc:
        # The binding is not what _verify_fast expects (argon2-cffi warns the
        # context struct may change): stop trying it. Never "accept".
        _disable_fast_path(exc)
    except Exception as exc:  # e.g. MemoryError: this call only
        log.warning("argon2 fast path failed, using argon2-cffi's verify: %r", exc)
    try:
        return bool(_hasher.verify(encoded, password))
    except (VerificationError, InvalidHashError):
        return False
    except Exception:  # e.g. unsupported parameters in a corrupted hash
        return False


# --- the pooled fast path ------------------------------------------------------------


class _NoFastPath(Exception):
    """`_verify_fast` cannot decide this case; use `PasswordHasher.verify`."""


# The canonical form libargon2's encoder writes for argon2id version 0x13:
# decimals without leading zeros, unpadded standard base64 (checked again by
# re-encoding in `_b64_canonical`). Anything else -- other types, v=16, extra
# fields, odd spellings -- goes to `PasswordHasher.verify`, whose decoder is
# the reference for what such strings mean.
_ARGON2ID_V19 = re.compile(
    r"\$argon2id\$v=19\$m=([1-9][0-9]{0,9}),t=([1-9][0-9]{0,9}),p=([1-9][0-9]{0,9})"
    r"\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)",
    re.ASCII,
)
_UINT32_MAX = 2**32 - 1


def _b64_canonical(text: str) -> bytes:
    """Decode unpadded base64 as libargon2 does, or raise `_NoFastPath`.

    Only the canonical spelling is accepted (re-encoding gives the same text:
    no non-zero trailing bits), so both decoders agree on the bytes."""
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:
        raise _NoFastPath("bad base64") from None
    if base64.b64encode(raw).decode("ascii").rstrip("=") != text:
        raise _NoFastPath("non-canonical base64")
    return raw


def _memory_bytes(m_cost: int, lanes: int) -> int:
    """Bytes libargon2 asks for (core.c argon2_ctx): m_cost KiB blocks, at
    least 8 per lane, rounded down to a multiple of 4 x lanes."""
    blocks = max(m_cost, 2 * 4 * lanes)
    return (blocks // (4 * lanes)) * (4 * lanes) * 1024


class _BufferPool:
    """Working memory for libargon2, lent through its allocation callbacks.

    Buffers are anonymous mmap()s (independent of malloc and of the mmap
    threshold the server pins). When a verification ends, a buffer of the
    pooled size is kept if fewer than ``limit`` are kept already; anything
    else is unmapped at once. A kept buffer is resident and already faulted
    in, so the next verification takes no page faults. libargon2 wipes the
    whole buffer before handing it back (``clear_internal_memory``, on by
    default; it holds values derived from the password): that memset of
    19 MiB of resident memory costs ~0.7 ms per verification on the 2-core
    development machine, and is kept deliberately.
    """

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        self._lock = threading.Lock()
        self._idle: list[tuple[mmap.mmap, Any]] = []
        self._lent: dict[int, tuple[mmap.mmap, Any]] = {}
        self._last_return = time.monotonic()

    def take(self, ffi: Any, size: int) -> Any:
        """A ``uint8_t *`` to ``size`` writable bytes, owned by the pool."""
        with self._lock:
            entry = self._idle.pop() if size == self.size and self._idle else None
        if entry is None:
            buf = mmap.mmap(-1, size)
            entry = (buf, ffi.from_buffer("uint8_t[]", buf, require_writable=True))
        address = int(ffi.cast("uintptr_t", entry[1]))
        with self._lock:
            self._lent[address] = entry
        return entry[1]

    def give_back(self, ffi: Any, pointer: Any, size: int) -> None:
        """Keep the buffer behind ``pointer`` for reuse, or unmap it."""
        address = int(ffi.cast("uintptr_t", pointer))
        with self._lock:
            entry = self._lent.pop(address, None)
            if entry is None:
                return
            self._last_return = time.monotonic()
            if size == self.size and len(entry[0]) == size and len(self._idle) < self.limit:
                self._idle.append(entry)
                return
        ffi.release(entry[1])
        entry[0].close()

    def held(self) -> tuple[int, int]:
        """(buffers kept for reuse, buffers lent out now)."""
        with self._lock:
            return len(self._idle), len(self._lent)

    def release_if_quiet(self, quiet: float) -> float | None:
        """Unmap the kept buffers if no buffer came back for ``quiet``
        seconds and none is lent out. Returns the seconds to wait before
        asking again while buffers are still kept, else None."""
        with self._lock:
            if not self._idle:
                return None
            waited = time.monotonic() - self._last_return
            if self._lent:
                return quiet
            if waited < quiet:
                return max(quiet - waited, quiet / 10)
            released, self._idle = self._idle, []
        for buf, pointer in released:
            low_level.ffi.release(pointer)
            buf.close()
        return None


_pool = _BufferPool(
    _memory_bytes(ARGON2_MEMORY_COST, ARGON2_PARALLELISM), ARGON2_POOL_BUFFERS
)
_callbacks: tuple[Any, Any] | None = None


def share_pool(processes: int) -> None:
    """This process is one of ``processes`` server workers: keep its share of
    the ``ARGON2_POOL_BUFFERS`` buffers (at least one), so the memory the
    workers retain together stays about what one server process retains."""
    _pool.limit = max(1, ARGON2_POOL_BUFFERS // max(1, processes))
_fast_path_enabled = True


def _get_callbacks() -> tuple[Any, Any]:
    """The libargon2 allocate/free callbacks (made once, kept alive here)."""
    global _callbacks
    if _callbacks is None:
        ffi, lib = low_level.ffi, low_level.lib

        # error=: if the callback raised, cffi returns this instead of 0; the
        # pointer was set to NULL first, and libargon2 checks it anyway.
        @ffi.callback("int(uint8_t **, size_t)", error=lib.ARGON2_MEMORY_ALLOCATION_ERROR,
                      onerror=_callback_error)
        def allocate(memory: Any, size: int) -> int:
            memory[0] = ffi.NULL
            memory[0] = _pool.take(ffi, size)
            return int(lib.ARGON2_OK)

        @ffi.callback("void(uint8_t *, size_t)", onerror=_callback_error)
        def free(memory: Any, size: int) -> None:
            _pool.give_back(ffi, memory, size)

        _callbacks = (allocate, free)
    return _callbacks


def _callback_error(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    log.warning("argon2 memory callback failed: %r", exc)


def _disable_fast_path(exc: BaseException) -> None:
    global _fast_path_enabled
    if _fast_path_enabled:
        log.warning("argon2 fast path disabled, using argon2-cffi's verify: %r", exc)
    _fast_path_enabled = False


def _verify_fast(encoded: str, password: str) -> bool:
    """Verify an argon2id v=19 hash with libargon2's ``argon2_ctx`` and pooled memory.

    Computes the raw hash with the stored salt and parameters and compares it
    in constant time with the stored one, which is what libargon2's
    ``argon2_verify`` does. Raises `_NoFastPath` for anything it does not
    handle exactly like `PasswordHasher.verify`; other exceptions mean the
    binding is not what this code expects (the caller falls back too).
    """
    if not _fast_path_enabled:
        raise _NoFastPath("disabled")
    match = _ARGON2ID_V19.fullmatch(encoded)
    if match is None:
        raise _NoFastPath("not canonical argon2id v=19")
    m_cost, t_cost, lanes = (int(match.group(i)) for i in (1, 2, 3))
    if max(m_cost, t_cost, lanes) > _UINT32_MAX:
        raise _NoFastPath("parameter out of range")
    salt = _b64_canonical(match.group(4))
    expected = _b64_canonical(match.group(5))
    try:
        secret = password.encode("utf-8")  # PasswordHasher's encoding
    except UnicodeEncodeError:  # lone surrogates: PasswordHasher raises, i.e. False
        raise _NoFastPath("password not encodable") from None
    ffi, lib = low_level.ffi, low_level.lib
    try:
        allocate, free = _get_callbacks()
    except Exception as exc:  # e.g. no write+execute memory for libffi closures
        _disable_fast_path(exc)
        raise _NoFastPath("no callbacks") from None
    out = ffi.new("uint8_t[]", len(expected))
    pwd = ffi.new("uint8_t[]", secret)
    salt_c = ffi.new("uint8_t[]", salt)
    ctx = ffi.new(
        "argon2_context *",
        {
            "out": out,
            "outlen": len(expected),
            "pwd": pwd,
            "pwdlen": len(secret),
            "salt": salt_c,
            "saltlen": len(salt),
            "secret": ffi.NULL,
            "secretlen": 0,
            "ad": ffi.NULL,
            "adlen": 0,
            "t_cost": t_cost,
            "m_cost": m_cost,
            "lanes": lanes,
            "threads": lanes,
            "version": 0x13,
            "allocate_cbk": allocate,
            "free_cbk": free,
            "flags": lib.ARGON2_DEFAULT_FLAGS,
        },
    )
    rc = low_level.core(ctx, lib.Argon2_id)
    if rc != lib.ARGON2_OK:  # bad parameters, no memory: let libargon2's verify decide
        raise _NoFastPath(f"argon2_ctx returned {rc}")
    return hmac.compare_digest(ffi.buffer(out)[:], expected)


async def verify_password_async(password_hash: str | None, password: str) -> bool:
    """`verify_password` on a worker thread, so a login never blocks other sessions.

    Afterwards the pool's kept buffers are due for release once logins stop
    (`ARGON2_POOL_IDLE_SECONDS`)."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(_get_executor(), verify_password, password_hash, password)
    finally:
        _arm_pool_release(loop)


# The pending release timer and its loop (one at a time; a timer of a loop
# that has since closed never fires, so a new loop arms its own).
_release_timer: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None


def _arm_pool_release(loop: asyncio.AbstractEventLoop, delay: float | None = None) -> None:
    global _release_timer
    if _release_timer is not None and _release_timer[0] is loop and delay is None:
        return
    wait = ARGON2_POOL_IDLE_SECONDS if delay is None else delay
    _release_timer = (loop, loop.call_later(wait, _release_pool, loop))


def _release_pool(loop: asyncio.AbstractEventLoop) -> None:
    global _release_timer
    _release_timer = None
    again = _pool.release_if_quiet(ARGON2_POOL_IDLE_SECONDS)
    if again is not None:
        _arm_pool_release(loop, again)


def needs_rehash(password_hash: str) -> bool:
    """True if the hash was made with other parameters than the current ones.

    Call after a successful login and store `hash_password(password)` if so.
    A hash that cannot be parsed needs a rehash too.
    """
    try:
        return _hasher.check_needs_rehash(password_hash)
    except Exception:
        return True


# --- SCRAM-SHA-256 (RFC 5802, RFC 7677) stored keys in RFC 5803 form -----------


@dataclass(frozen=True, slots=True)
class ScramKeys:
    """What a SCRAM server stores for a user (RFC 5802 section 3)."""

    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def scram_keys_from_password(
    password: str, salt: bytes, iterations: int = SCRAM_MIN_ITERATIONS
) -> ScramKeys:
    """Derive StoredKey/ServerKey as RFC 5802 section 3 defines them.

    SaltedPassword := Hi(Normalize(password), salt, i)   (Hi is PBKDF2-HMAC)
    ClientKey := HMAC(SaltedPassword, "Client Key"); StoredKey := H(ClientKey)
    ServerKey := HMAC(SaltedPassword, "Server Key")
    """
    salted = hashlib.pbkdf2_hmac(
        "sha256", prepare_password(password).encode("utf-8"), salt, iterations
    )
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return ScramKeys(iterations, salt, stored_key, server_key)


def make_scram_sha256(
    password: str, iterations: int = SCRAM_MIN_ITERATIONS, salt: bytes | None = None
) -> str:
    """Return the RFC 5803 string ``SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>``.

    Salt, StoredKey and ServerKey are base64 (RFC 5803 section 3). ``salt`` is
    random (16 bytes) unless given, which tests use for fixed vectors.
    """
    if iterations < SCRAM_MIN_ITERATIONS:
        raise ValueError(f"SCRAM iteration count must be >= {SCRAM_MIN_ITERATIONS} (RFC 7677 4)")
    if salt is None:
        salt = secrets.token_bytes(SCRAM_SALT_BYTES)
    k = scram_keys_from_password(password, salt, iterations)
    return f"SCRAM-SHA-256${k.iterations}:{_b64(k.salt)}${_b64(k.stored_key)}:{_b64(k.server_key)}"


def parse_scram_sha256(value: str) -> ScramKeys:
    """Parse a stored SCRAM-SHA-256 credential; raise ValueError if malformed.

    Accepts the RFC 5803 form and, for tolerance, the bare
    ``iterations:salt:StoredKey:ServerKey`` form described in store/api.py.
    """
    try:
        if value.startswith("SCRAM-SHA-256$"):
            _, params, keys = value.split("$")
            iter_s, salt_s = params.split(":")
            stored_s, server_s = keys.split(":")
        else:
            iter_s, salt_s, stored_s, server_s = value.split(":")
        iterations = int(iter_s)
        salt = base64.b64decode(salt_s, validate=True)
        stored = base64.b64decode(stored_s, validate=True)
        server = base64.b64decode(server_s, validate=True)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"malformed SCRAM-SHA-256 credential: {exc}") from None
    if iterations < 1 or not salt or len(stored) != 32 or len(server) != 32:
        raise ValueError("malformed SCRAM-SHA-256 credential: bad sizes")
    return ScramKeys(iterations, salt, stored, server)


# --- APOP (RFC 1939 section 7) ---------------------------------------------------


def make_apop_secret() -> str:
    """Return a fresh random APOP shared secret (24 URL-safe characters, 144 bits).

    APOP stores the secret in clear on the server, so it should not be the
    user's login password; the admin shows this generated one to the user.
    """
    return secrets.token_urlsafe(18)


# --- all credentials at once ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """The stored credentials for one password, ready for the store.

    Use ``await store.add_account(address, **Credentials.from_password(pw).as_kwargs())``
    or the same with ``store.set_password``.
    """

    password_hash: str
    scram_sha256: str | None = None
    apop_secret: str | None = None

    @classmethod
    def from_password(
        cls,
        password: str,
        *,
        apop: bool | str = False,
        scram: bool = True,
        scram_iterations: int = SCRAM_MIN_ITERATIONS,
    ) -> Credentials:
        """Derive argon2id hash and SCRAM-SHA-256 keys from ``password``.

        ``apop``: False (default) stores no APOP secret (APOP disabled for the
        account: its secret would sit in clear in the store); True generates a
        random one with `make_apop_secret`; a string uses that string.
        """
        apop_secret: str | None
        if apop is True:
            apop_secret = make_apop_secret()
        elif apop is False:
            apop_secret = None
        else:
            apop_secret = apop
        return cls(
            password_hash=hash_password(password),
            scram_sha256=make_scram_sha256(password, scram_iterations) if scram else None,
            apop_secret=apop_secret,
        )

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `Store.add_account` / `Store.set_password`."""
        return {
            "password_hash": self.password_hash,
            "apop_secret": self.apop_secret,
            "scram_sha256": self.scram_sha256,
        }
