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
configuration. Measured on the 2-core development machine: about 28 ms per
verification (t=3/m=64 MiB/p=4, argon2-cffi's default, took ~160 ms there; t=3
m=19 MiB ~41 ms). That keeps a login under ~50 ms while costing an offline
attacker 19 MiB of memory per guess. Hashes made with other parameters still
verify; `needs_rehash` tells the caller to re-hash after a successful login.

Verification is CPU-bound and deliberately slow, so protocol code must call
`verify_password_async`, which runs it on a small dedicated thread pool
(argon2-cffi releases the GIL while hashing) and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mailyard.auth.saslprep import prepare_password

__all__ = [
    "ARGON2_MEMORY_COST",
    "ARGON2_PARALLELISM",
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
        ok = _hasher.verify(target, prepare_password(password))
    except (VerificationError, InvalidHashError):
        ok = False
    except Exception:  # e.g. unsupported parameters in a corrupted hash
        ok = False
    return ok and known


async def verify_password_async(password_hash: str | None, password: str) -> bool:
    """`verify_password` on a worker thread, so a login never blocks other sessions."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_get_executor(), verify_password, password_hash, password)


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
