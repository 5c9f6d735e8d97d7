"""DKIM key pairs of the domains served here, in the data directory.

Layout (``DATA/dkim/DOMAIN/``, directory mode 0700, private keys 0600)::

    GEN.rsa.pem       RSA 2048 private key, PKCS#1 PEM (rsa-sha256, RFC 8301)
    GEN.ed25519.key   Ed25519 private key, the base64 32-octet seed (RFC 8463)
    active            the name of the generation that signs

A generation ``GEN`` holds the two keys published under two selectors,
``GEN-rsa`` and ``GEN-ed25519`` (one key record per selector, RFC 8463 3 asks
for a selector per algorithm). ``mailyard dkim rotate`` makes a new
generation without touching ``active``; ``mailyard dkim activate`` switches
once its records are published, so a receiver never sees a signature whose
key is not in DNS yet.
"""

from __future__ import annotations

import base64
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ..fsutil import write_atomic

RSA_BITS = 2048
_GEN = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")


class DKIMKeyError(Exception):
    """A key or generation is missing or malformed (the text says which)."""


@dataclass(frozen=True)
class SigningKeys:
    """One generation's keys of one domain, as the signer uses them."""

    domain: str
    generation: str
    rsa_pem: bytes
    ed25519_seed_b64: bytes

    @property
    def rsa_selector(self) -> str:
        return f"{self.generation}-rsa"

    @property
    def ed25519_selector(self) -> str:
        return f"{self.generation}-ed25519"


@dataclass(frozen=True)
class KeyRecord:
    """A DNS record to publish: ``name`` (relative to nothing: a full name) and TXT text."""

    name: str
    text: str


def dkim_dir(data_dir: Path, domain: str) -> Path:
    return Path(data_dir) / "dkim" / domain.lower().rstrip(".")


def new_generation_name(data_dir: Path, domain: str, now: float | None = None) -> str:
    """``myYYYYMMDD`` (``myYYYYMMDDb``, ... when taken): a selector that says when it was made."""
    base = "my" + time.strftime("%Y%m%d", time.gmtime(time.time() if now is None else now))
    existing = set(generations(data_dir, domain))
    name, n = base, 0
    while name in existing:
        n += 1
        name = base + chr(ord("a") + n)
    return name


def generate(data_dir: Path, domain: str, generation: str | None = None, *, activate: bool = False) -> str:
    """Make a new generation of both keys for ``domain``; returns its name.
    With ``activate`` (or when the domain has no active generation yet) it signs at once."""
    folder = dkim_dir(data_dir, domain)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    os.chmod(folder.parent, 0o700)
    gen = generation or new_generation_name(data_dir, domain)
    if not _GEN.match(gen):
        raise DKIMKeyError(f"bad generation name {gen!r}")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    rsa_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    ed_key = ed25519.Ed25519PrivateKey.generate()
    seed = ed_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    # Whole files or none (a crash never leaves half a key), 0600 from the
    # start, and never over a generation that exists: its key may be in DNS.
    write_atomic(folder / f"{gen}.rsa.pem", rsa_pem, exclusive=True)
    write_atomic(folder / f"{gen}.ed25519.key", base64.b64encode(seed) + b"\n", exclusive=True)
    if activate or active_generation(data_dir, domain) is None:
        set_active(data_dir, domain, gen)
    return gen


def generations(data_dir: Path, domain: str) -> list[str]:
    folder = dkim_dir(data_dir, domain)
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".rsa.pem")] for p in folder.glob("*.rsa.pem"))


def active_generation(data_dir: Path, domain: str) -> str | None:
    try:
        name = (dkim_dir(data_dir, domain) / "active").read_text().strip()
    except OSError:
        return None
    return name or None


def set_active(data_dir: Path, domain: str, generation: str) -> None:
    folder = dkim_dir(data_dir, domain)
    if generation not in generations(data_dir, domain):
        raise DKIMKeyError(f"{domain} has no DKIM key generation {generation!r}")
    # not secret, and read by whichever user runs the server
    write_atomic(folder / "active", (generation + "\n").encode("utf-8"), mode=0o644)


def load(data_dir: Path, domain: str, generation: str | None = None) -> SigningKeys | None:
    """The keys of ``generation`` (by default the active one), None when there are none."""
    gen = generation or active_generation(data_dir, domain)
    if gen is None:
        return None
    folder = dkim_dir(data_dir, domain)
    try:
        rsa_pem = (folder / f"{gen}.rsa.pem").read_bytes()
        seed = (folder / f"{gen}.ed25519.key").read_bytes().strip()
    except OSError:
        return None
    return SigningKeys(domain.lower().rstrip("."), gen, rsa_pem, seed)


def records(keys: SigningKeys) -> list[KeyRecord]:
    """The two key records (RFC 6376 3.6.1, RFC 8463 4.2) to publish for ``keys``."""
    private = serialization.load_pem_private_key(keys.rsa_pem, password=None)
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    seed = base64.b64decode(keys.ed25519_seed_b64)
    ed_pub = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return [
        KeyRecord(f"{keys.rsa_selector}._domainkey.{keys.domain}",
                  "v=DKIM1; k=rsa; p=" + base64.b64encode(spki).decode()),
        KeyRecord(f"{keys.ed25519_selector}._domainkey.{keys.domain}",
                  "v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_pub).decode()),
    ]


def txt_zone_value(text: str) -> str:
    """A TXT value in zone-file syntax: quoted strings of at most 255 octets (RFC 1035 3.3.14)."""
    parts = [text[i:i + 255] for i in range(0, len(text), 255)] or [""]
    return " ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in parts)
