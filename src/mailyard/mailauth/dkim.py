"""DKIM (RFC 6376) signing and verification, with RSA-SHA256 (RFC 8301) and
Ed25519-SHA256 (RFC 8463), on dkimpy.

Signing: ``sign`` returns the two DKIM-Signature fields (Ed25519 first, then
RSA, each prepended as RFC 6376 5.6 asks) for a message; relaxed/relaxed
canonicalisation, never ``l=`` (RFC 6376 8.2: a body length limit lets
anyone append content), and the header set of RFC 6376 5.4.1 where present,
with From, To, Subject, Date and Message-ID signed once more than they occur
("oversigning", RFC 6376 5.4.2 and 8.15), so that none can be added later.
A header that is only fields is signed by ``_sign_fast`` (hashlib, OpenSSL,
libsodium, one body hash for both signatures); any other goes to dkimpy
(``_sign_dkimpy``), the reference the fast path is tested against.

Verification: ``verify`` checks the DKIM-Signatures of a message (all, or
for DMARC's needs only until one of the From domain passes) and gives
one result per signature checked in RFC 8601 2.7.1 terms: ``pass``; ``fail`` (body
hash or signature mismatch, expired ``x=``, revoked key, RSA key under 1024
bits: RFC 8301 3.2 says such a signature MUST NOT be considered valid);
``neutral`` (a malformed signature field); ``permerror`` (no key record);
``temperror`` (DNS failed). The key record is looked up through the
injected ``txt`` function (``dnscache.Resolver.txt``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import dkim as dkimpy
import nacl.exceptions
import nacl.signing
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ..message.headers import split_fields, split_plain_fields
from ..message.parse import split_header_body
from .dnscache import DNSTempError
from .keys import SigningKeys

# RFC 6376 5.4.1: the fields that should be signed when present.
SIGNED_FIELDS = (
    "from", "reply-to", "subject", "date", "to", "cc", "resent-date", "resent-from", "resent-to",
    "resent-cc", "in-reply-to", "references", "list-id", "list-help", "list-unsubscribe",
    "list-subscribe", "list-post", "list-owner", "list-archive", "message-id", "mime-version",
    "content-type", "content-transfer-encoding",
)
# RFC 6376 8.15: signed one more time than they occur, so a second copy breaks the signature.
OVERSIGNED = frozenset({"from", "to", "subject", "date", "message-id"})
# RFC 8301 3.2: RSA keys under 1024 bits are not valid.
MIN_RSA_BITS = 1024

_quiet = logging.getLogger("mailyard.mailauth.dkimpy")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def _include_headers(header: bytes) -> list[bytes]:
    """The h= list for a header section: ``_include_headers_of`` its fields."""
    return _include_headers_of(split_fields(header))


def _include_headers_of(fields: list[tuple[str, bytes]]) -> list[bytes]:
    """The names of SIGNED_FIELDS present, each as often as it occurs (plus
    once for OVERSIGNED ones), in the order of SIGNED_FIELDS."""
    counts: dict[str, int] = {}
    for name, _value in fields:
        lname = name.lower()
        if lname in SIGNED_FIELDS:
            counts[lname] = counts.get(lname, 0) + 1
    out: list[bytes] = []
    for lname in SIGNED_FIELDS:
        n = counts.get(lname, 0) + (1 if lname in OVERSIGNED else 0)
        out.extend([lname.encode()] * n)
    return out


class _SignedDigest:
    def __init__(self, signature: bytes) -> None:
        self.signature = signature


class _OpenSSLRSA:
    """An RSA private key with the ``sign(digest)`` face of a PyNaCl key."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.key = key

    def sign(self, digest: bytes) -> _SignedDigest:
        # RFC 6376 3.3.1: RSASSA-PKCS1-v1_5 over the SHA-256 of the signed data
        return _SignedDigest(self.key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256())))


class _DKIM(dkimpy.DKIM):
    """dkimpy's signer with the RSA operation done by OpenSSL (``cryptography``).

    dkimpy computes RSA signatures with Python integers (about 17 ms for a
    2048-bit key, holding the GIL); OpenSSL takes about 1 ms. dkimpy still
    canonicalises, hashes and writes the field; only the final private-key
    operation changes: for rsa-sha256 ``gen_header`` takes the branch it has
    for ed25519-sha256, which signs the same SHA-256 digest with ``pk.sign``
    (both algorithms hash with SHA-256), given a key object with that face.
    The interoperability tests (OpenDKIM verifies the result) keep this honest."""

    rsa_key: rsa.RSAPrivateKey | None = None

    def gen_header(self, fields, include_headers, canon_policy, header_name, pk, standardize=False):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201
        if self.signature_algorithm != b"rsa-sha256" or self.rsa_key is None:
            return super().gen_header(fields, include_headers, canon_policy, header_name, pk, standardize)
        self.signature_algorithm = b"ed25519-sha256"
        try:
            return super().gen_header(fields, include_headers, canon_policy, header_name,
                                      _OpenSSLRSA(self.rsa_key), standardize)
        finally:
            self.signature_algorithm = b"rsa-sha256"


# dkimpy's sign (and ARC's) parses the PEM private key with its own ASN.1
# reader at every call, about 0.2 ms in Python, before _DKIM and _ARC hand
# the private-key operation to OpenSSL; what it parses depends only on the
# key's text, and a server signs with one key per domain: parsed once.
dkimpy.parse_pem_private_key = functools.lru_cache(maxsize=64)(dkimpy.parse_pem_private_key)


@functools.lru_cache(maxsize=64)
def _rsa_key(pem: bytes) -> rsa.RSAPrivateKey | None:
    key = serialization.load_pem_private_key(pem, password=None)
    return key if isinstance(key, rsa.RSAPrivateKey) else None


def sign(message: bytes, keys: SigningKeys) -> bytes:
    """The DKIM-Signature fields for ``message`` (CRLF lines), to prepend to it.

    A header that is only fields (``split_plain_fields``) with keys that
    load is signed by ``_sign_fast``; anything else by dkimpy
    (``_sign_dkimpy``), which also refuses what it cannot sign."""
    header, body = split_header_body(message)
    fields = split_plain_fields(header)
    if fields is not None and b"\x0b" not in header and b"\x0c" not in header:
        rsa_key, ed_key = _rsa_key_or_none(keys.rsa_pem), _ed25519_key(keys.ed25519_seed_b64)
        if rsa_key is not None and ed_key is not None:
            return _sign_fast(fields, body, keys, rsa_key, ed_key)
    return _sign_dkimpy(message, keys, _include_headers(header))


def _sign_dkimpy(message: bytes, keys: SigningKeys, include: list[bytes]) -> bytes:
    """``sign`` by dkimpy: the reference the fast path is tested against."""
    out = b""
    for selector, algorithm, key in (
        (keys.rsa_selector, b"rsa-sha256", keys.rsa_pem),
        (keys.ed25519_selector, b"ed25519-sha256", keys.ed25519_seed_b64),
    ):
        signer = _DKIM(message, signature_algorithm=algorithm, linesep=b"\r\n", logger=_quiet)
        if algorithm == b"rsa-sha256":
            signer.rsa_key = _rsa_key(key)
        field = signer.sign(selector.encode(), keys.domain.encode(), key,
                            canonicalize=(b"relaxed", b"relaxed"), include_headers=include, length=False)
        out = field + out  # RFC 6376 5.6: each new signature goes on top
    return out


# --- the fast path of signing --------------------------------------------------------
# What ``sign`` asks of dkimpy (relaxed/relaxed, rsa-sha256 and ed25519-sha256,
# the header list of ``_include_headers``, no l=, no x=), computed with the
# canonicalisers of the verification fast path, hashlib and the cached keys:
# the body's canonical form and hash once for both signatures, no regular
# expressions per message. The tags are dkimpy's, in its order; the folding
# is this module's (``_fold_signature``).

# A header with VT or FF is signed by dkimpy (``sign``): its relaxed header
# canonicalisation strips a value with bytes.strip(), which takes them as
# well as WSP (RFC 6376 3.4.2 removes WSP only), and its verifier must agree.
_FOLD_AT = 78  # RFC 5322 2.1.1: lines SHOULD be at most 78 characters
_FIELD_NAME = b"DKIM-Signature:"


def _rsa_key_or_none(pem: bytes) -> rsa.RSAPrivateKey | None:
    try:
        return _rsa_key(pem)
    except (ValueError, TypeError):
        return None  # dkimpy says what is wrong with it


@functools.lru_cache(maxsize=64)
def _ed25519_key(seed_b64: bytes) -> nacl.signing.SigningKey | None:
    """The Ed25519 signing key (RFC 8463 4) from its base64 seed, made once
    per key text rather than at every signature."""
    try:
        return nacl.signing.SigningKey(base64.b64decode(seed_b64))  # read as dkimpy reads it
    except (ValueError, TypeError, nacl.exceptions.CryptoError):
        return None


def _sign_fast(fields: list[tuple[str, bytes]], body: bytes, keys: SigningKeys,
               rsa_key: rsa.RSAPrivateKey, ed_key: nacl.signing.SigningKey) -> bytes:
    """The two fields ``sign`` returns, for a header split into ``fields``."""
    if b"\n" in body and body.count(b"\n") != body.count(b"\r\n"):
        # lines ending in a bare LF among CRLF ones: each LF is a line end,
        # as dkimpy reads the message
        body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    # RFC 6376 3.4.4 and 3.7: one body hash for both signatures
    bh = base64.b64encode(hashlib.sha256(_relaxed_body(body)).digest())
    include = _include_headers_of(fields)
    # RFC 6376 5.4.2: each listed name takes the next instance from the
    # bottom; one with no instance left (oversigned) contributes nothing
    index = field_index(fields)
    taken: dict[bytes, int] = {}
    parts: list[bytes] = []
    for name in include:
        n = taken.get(name, 0)
        taken[name] = n + 1
        at = index.get(name.decode("ascii"))
        if at is not None and n < len(at):
            parts.append(name + b":" + _relaxed_value(fields[at[n]][1]))  # RFC 6376 3.4.2
    signed_fields = b"".join(part + b"\r\n" for part in parts)
    domain = keys.domain.encode()
    stamp = str(int(time.time())).encode("ascii")
    out = b""
    for selector, algorithm in ((keys.rsa_selector, b"rsa-sha256"), (keys.ed25519_selector, b"ed25519-sha256")):
        # dkimpy's tags in its order; i= and q= are the defaults (RFC 6376 3.5), written out as dkimpy does
        value = b"; ".join((
            b"v=1", b"a=" + algorithm, b"c=relaxed/relaxed", b"d=" + domain, b"i=@" + domain,
            b"q=dns/txt", b"s=" + selector.encode(), b"t=" + stamp, b"h=" + b" : ".join(include),
            b"bh=" + bh, b"b=",
        ))
        # RFC 6376 3.7: the signed fields, then this field with b= empty,
        # canonicalised (its value has single spaces, no folding: as is),
        # without a final CRLF
        digest = hashlib.sha256(signed_fields + b"dkim-signature:" + value).digest()
        if algorithm == b"rsa-sha256":
            # RFC 6376 3.3.1: RSASSA-PKCS1-v1_5 over the SHA-256 of the signed data
            signature = rsa_key.sign(digest, _PKCS1, _SHA256_DONE)
        else:
            # RFC 8463 3: Ed25519 signs the SHA-256 of the signed data
            signature = ed_key.sign(digest).signature
        out = _fold_signature(value, base64.b64encode(signature)) + out  # RFC 6376 5.6: on top
    return out


def _fold_signature(value: bytes, b: bytes) -> bytes:
    """``DKIM-Signature: value`` + ``b``, folded (RFC 5322 2.2.3) at spaces
    into lines of at most 78 characters (RFC 5322 2.1.1; a single tag value
    longer than a line stays whole), with b= starting its own line and its
    base64 broken where a line is full (RFC 6376 3.5 allows FWS in b=): a
    relay that refolds the field changes only whitespace, which relaxed
    canonicalisation (RFC 6376 3.4.2) ignores. CRLF at the end."""
    lines: list[bytes] = []
    line = _FIELD_NAME
    for word in value[:-3].split(b" "):  # the value ends with " b=": written below
        if len(line) + 1 + len(word) > _FOLD_AT and line.strip():
            lines.append(line)
            line = b""
        line += b" " + word
    lines.append(line)
    first = _FOLD_AT - len(b" b=")
    lines.append(b" b=" + b[:first])
    lines.extend(b" " + b[i:i + _FOLD_AT - 1] for i in range(first, len(b), _FOLD_AT - 1))
    return b"\r\n".join(lines) + b"\r\n"


@dataclass(frozen=True)
class DKIMResult:
    """The outcome of one signature (RFC 8601 2.7.1)."""

    result: str  # pass, fail, neutral, permerror, temperror
    domain: str  # d=
    selector: str  # s=
    algorithm: str  # a=
    reason: str = ""
    b_prefix: str = ""  # the first characters of b= (RFC 6008 header.b)


_DUPLICATE = "\0duplicate"  # the key _tags adds when a tag name occurs twice

_ASCII_WS = b" \t\n\r\x0b\x0c"  # what bytes.split() and strip() take as whitespace


_TAG_NAMES = {name.encode(): name for name in ("v", "a", "b", "bh", "c", "d", "h", "i", "l", "q", "s", "t", "x", "z")}


def _tags(value: bytes) -> dict[str, str]:
    """The ``tag=value`` list of a signature field (RFC 6376 3.2), names
    lower-cased, all whitespace removed from the values (folding and FWS
    carry no meaning in them). A name given twice makes the signature
    invalid (RFC 6376 3.2: "Tags with duplicate names MUST NOT occur"):
    the key ``_DUPLICATE`` is then present, and only dkimpy judges it."""
    out: dict[str, str] = {}
    for part in value.split(b";"):
        name, sep, text = part.partition(b"=")
        if not sep:
            continue
        name = name.strip()
        key = _TAG_NAMES.get(name)  # the names RFC 6376 3.5 defines, spelt as usual
        if key is None:
            if not name.isalpha():
                continue
            key = name.lower().decode("ascii")
        if key in out:
            out[_DUPLICATE] = key
        # one C call removes FWS (RFC 6376 3.2) from the value
        out[key] = text.translate(None, _ASCII_WS).decode("ascii", "replace")
    return out


@functools.lru_cache(maxsize=256)
def _public_key(record: bytes) -> tuple[object, int, bytes, bool]:
    """dkimpy's parse of a key record (RFC 6376 3.6.1), kept: the same key
    signs many messages, and parsing it is most of a verification's cost."""
    return dkimpy.evaluate_pk(b"", record)


class _OpenSSLRSAPublic:
    """An RSA public key with the ``verify(digest, signature)`` face of a PyNaCl key."""

    def __init__(self, key: rsa.RSAPublicKey) -> None:
        self.key = key

    def verify(self, digest: bytes, signature: bytes) -> None:
        try:
            # RFC 6376 3.3.1: RSASSA-PKCS1-v1_5 over the SHA-256 of the signed data
            self.key.verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        except InvalidSignature as exc:
            raise nacl.exceptions.BadSignatureError("RSA signature did not verify") from exc


@functools.lru_cache(maxsize=256)
def _openssl_rsa(record: bytes) -> _OpenSSLRSAPublic | None:
    tags = dkimpy.util.parse_tag_value(record)
    try:
        key = serialization.load_der_public_key(base64.b64decode(re.sub(rb"\s+", b"", tags[b"p"])))
    except (KeyError, ValueError):
        return None
    return _OpenSSLRSAPublic(key) if isinstance(key, rsa.RSAPublicKey) else None


class _Verifier(dkimpy.DKIM):
    """dkimpy's verifier with the key record looked up and parsed by ``verify``
    below (through the resolver's cache and ``_public_key``) rather than in
    dkimpy's ``verify_sig``, and with an rsa-sha256 signature checked by
    OpenSSL: as in signing (``_DKIM``), dkimpy's ed25519 branch verifies the
    SHA-256 digest through ``pk.verify``, given a key with that face. The key
    size limit of RFC 8301 3.2 is checked before (``_key_problem``)."""

    record: bytes = b""

    def verify_sig(self, sig, include_headers, sig_header, dnsfunc):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201
        self.pk, self.keysize, self.ktag, self.seqtlsrpt = _public_key(self.record)
        fast = _openssl_rsa(self.record) if sig.get(b"a") == b"rsa-sha256" and self.ktag == b"rsa" else None
        if fast is None:
            return self.verify_sig_process(sig, include_headers, sig_header, dnsfunc)
        self.pk, self.ktag = fast, b"ed25519"
        try:
            return self.verify_sig_process(sig, include_headers, sig_header, dnsfunc)
        finally:
            self.ktag = b"rsa"


# --- the fast path of verification -----------------------------------------------------
# The common signature (relaxed/relaxed, rsa-sha256 or ed25519-sha256, no x=,
# a plain key record) is checked here with hashlib and OpenSSL, the body hash
# computed once for all signatures: about a quarter of dkimpy's cost, which
# the MX port pays per message. Only a pass is taken from it: anything else
# (an unusual tag, a mismatch) goes through dkimpy as before, which gives the
# result and its reason. A pass is sound on its own: the signature verified
# over the canonical form (RFC 6376 3.4.2, 3.4.4) of the fields h= names and
# of the body, as RFC 6376 3.7 computes it.
_PKCS1 = padding.PKCS1v15()
_SHA256_DONE = Prehashed(hashes.SHA256())
_FAST_SIG_TAGS = frozenset({"v", "a", "b", "bh", "c", "d", "h", "i", "q", "s", "t"})
_FAST_KEY_TAGS = frozenset({"v", "k", "p", "n"})


def _one_space(text: bytes) -> bytes:
    """Every run of WSP (SP, HTAB) in ``text`` as one SP, with bytes methods
    only: a regular expression tries a match at every octet, several times
    slower on a message body (most octets are not WSP)."""
    if b"\t" in text:
        text = text.replace(b"\t", b" ")
    while b"  " in text:  # each pass halves every run: log2(longest run) passes
        text = text.replace(b"  ", b" ")
    return text


def _relaxed_field(name: str, value: bytes) -> bytes:
    """RFC 6376 3.4.2: lower-case name, unfolded, WSP runs as one SP, none at the ends."""
    return name.strip().lower().encode("ascii") + b":" + _relaxed_value(value)


def _relaxed_value(value: bytes) -> bytes:
    """A field value as RFC 6376 3.4.2 canonicalises it: unfolded, WSP runs
    as one SP, none at the ends (``_one_space`` written out: this runs for
    every signed field)."""
    if b"\n" in value:
        value = value.replace(b"\r\n", b"").replace(b"\n", b"")
    if b"\t" in value:
        value = value.replace(b"\t", b" ")
    while b"  " in value:
        value = value.replace(b"  ", b" ")
    return value.strip(b" ")


def _relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4: no WSP at line ends, WSP runs as one SP, no empty lines at the end."""
    if b"\r\n" not in body and b"\n" in body:
        body = body.replace(b"\n", b"\r\n")
    body = _one_space(body)
    if b" \r\n" in body:  # runs are single SPs now: one pass removes them all
        body = body.replace(b" \r\n", b"\r\n")
    end = len(body)
    while body.endswith(b"\r\n\r\n", 0, end):
        end -= 2
    if end < len(body):
        body = body[:end]
    if body == b"\r\n":
        return b""
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body


# RFC 6376 3.2: a tag named b, at the start of a tag-spec (after ";", here
# also put before the first), FWS around the name; found from each ";" only
# (the pattern starts with it), so the long b= value is skipped at C speed
_B_TAG = re.compile(rb";[ \t\n\r\x0b\x0c]*b[ \t\n\r\x0b\x0c]*=")


def _without_b(value: bytes) -> bytes:
    """A signature field's value with the b= value deleted (RFC 6376 3.7:
    the signature is computed with b= empty), the rest byte for byte."""
    text = b";" + value
    pieces: list[bytes] = []
    start = 0
    for match in _B_TAG.finditer(text):
        pieces.append(text[start:match.end()])
        start = text.find(b";", match.end())  # the b= value runs to the next tag-spec
        if start < 0:
            start = len(text)
    pieces.append(text[start:])
    return b"".join(pieces)[1:]


def _plan(h: str) -> Iterator[tuple[str, int, bytes]]:
    """The h= list (whitespace already out, ``_tags``) as (lower-case name,
    which instance counted from the bottom, the canonical "name:" of RFC
    6376 3.4.2) triples, RFC 6376 5.4.2: a name listed again takes the next
    instance up."""
    seen: dict[str, int] = {}
    for name in h.lower().split(":"):
        n = seen.get(name, 0)
        seen[name] = n + 1
        # a name that is not ASCII matches no field (split_fields reads ASCII names)
        yield name, n, name.encode("ascii", "replace") + b":"


# The longest h= whose plan is kept (``_signed_plan``): a signer's list of
# a few dozen names is a few hundred characters. The cache bounds entries,
# not octets; a plan takes about 25 times its h= in memory, and a hostile
# h= folded over megabytes of header lines must not stay behind.
PLAN_KEPT_MAX = 1024


@functools.lru_cache(maxsize=256)
def _signed_plan(h: str) -> tuple[tuple[tuple[str, int, bytes], ...], bool]:
    """``_plan(h)`` and whether From is signed (RFC 6376 5.4: it MUST be),
    kept by the text (at most ``PLAN_KEPT_MAX`` characters): a signer's h=
    repeats in every message it signs."""
    plan = tuple(_plan(h))
    return plan, any(name == "from" for name, _n, _canonical in plan)


@functools.lru_cache(maxsize=256)
def _fast_key(record: str) -> tuple[str, object] | None:
    """("rsa" | "ed25519", its public key) for a plain key record, else None.
    Kept by the record's text (the resolver's cached answer, whose hash the
    str keeps): a key is parsed once, not per message, and a changed record
    (seen once its TTL has run out) is another text, parsed anew."""
    try:
        tags = {k.decode().lower(): v for k, v in dkimpy.util.parse_tag_value(record.encode()).items()}
    except Exception:  # noqa: BLE001 - dkimpy judges the record
        return None
    if not set(tags) <= _FAST_KEY_TAGS or tags.get("v", b"DKIM1") != b"DKIM1":
        return None
    try:
        raw = base64.b64decode(re.sub(rb"\s+", b"", tags.get("p", b"")), validate=True)
        if tags.get("k", b"rsa") == b"rsa":
            key = serialization.load_der_public_key(raw)
            return ("rsa", key) if isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS else None
        if tags.get("k") == b"ed25519":
            # libsodium (PyNaCl, as dkimpy uses) verifies in about half
            # OpenSSL's time here, and refuses non-canonical encodings
            return ("ed25519", nacl.signing.VerifyKey(raw))
    except (ValueError, TypeError, nacl.exceptions.CryptoError):
        return None
    return None


# RFC 5322 2.2: a field line starts with its name (printable US-ASCII, no
# colon, no SP) and a colon, as dkimpy reads it. A line that is none of a
# field line, a continuation line (starting with WSP) and an empty line,
# after the first line (searched from each LF only: the pattern starts with it):
_NOT_A_FIELD_LINE = re.compile(rb"\n(?![ \t]|\r?(?:\n|\Z)|[\x21-\x39\x3b-\x7e]+:)")
# the first line that is not empty is a field line, or there is none
_FIRST_LINE = re.compile(rb"(?:\r?\n)*(?:[\x21-\x39\x3b-\x7e]+:|\r?\Z)")


def _only_fields(header: bytes) -> bool:
    """Whether every line of the header section is a field or a
    continuation line (RFC 5322 2.2), with CRLF or LF line ends only.
    ``split_fields`` skips any other line (it reads tolerantly, for
    indexing), so the fast path would sign over a header that lacks it,
    while a reader's parser ends the header there and shows the line and
    everything after it as body text: such a message is left to dkimpy,
    which refuses it."""
    if header.count(b"\r") != header.count(b"\r\n"):
        return False  # a bare CR: splitlines() and dkimpy see other lines
    # empty lines (the one that ends the header) are skipped; a continuation
    # of no field, or a line that is no field, is not taken
    return _FIRST_LINE.match(header) is not None and _NOT_A_FIELD_LINE.search(header) is None


def field_index(fields: list[tuple[str, bytes]]) -> dict[str, list[int]]:
    """The positions of ``fields`` by lower-case name, the bottom one first
    (RFC 6376 5.4.2 takes instances from the bottom). Made once per message
    by the inbound checks, and read by DKIM (its signatures, the fields
    they sign), ARC (whether there is a set) and DMARC (the From fields),
    rather than each walking the header's names again."""
    by_name: dict[str, list[int]] = {}
    for i in range(len(fields) - 1, -1, -1):
        name = fields[i][0].strip().lower()
        at = by_name.get(name)
        if at is None:
            by_name[name] = [i]
        else:
            at.append(i)
    return by_name


class _Fast:
    """The fast path for one message: its fields, and the body hash."""

    def __init__(self, fields: list[tuple[str, bytes]], body: bytes, plain: bool,
                 index: dict[str, list[int]] | None = None) -> None:
        self.fields = fields
        self.body = body
        # whether the header is only fields (_only_fields): else no fast path
        self.plain = plain
        self._bh: bytes | None = None
        self._by_name = index

    def body_hash(self) -> bytes:
        if self._bh is None:
            self._bh = hashlib.sha256(_relaxed_body(self.body)).digest()
        return self._bh

    def instances(self) -> dict[str, list[int]]:
        """Field positions by lower-case name, the bottom one first."""
        if self._by_name is None:
            self._by_name = field_index(self.fields)
        return self._by_name

    def passes(self, position: int, tags: dict[str, str], record: str) -> bool:
        """Whether the signature in field ``position`` verifies (False: ask dkimpy)."""
        if not self.plain:
            return False
        if not _FAST_SIG_TAGS.issuperset(tags) or tags.get("v") != "1" \
                or tags.get("c", "").lower() != "relaxed/relaxed":
            return False
        algorithm, domain = tags.get("a", "").lower(), tags.get("d", "").lower()
        found = _fast_key(record)
        if found is None or (algorithm, found[0]) not in (("rsa-sha256", "rsa"), ("ed25519-sha256", "ed25519")):
            return False
        ident = tags.get("i", "").lower().rpartition("@")[2]
        if not domain or (ident and ident != domain and not ident.endswith("." + domain)):
            return False
        stamp = tags.get("t", "0")
        if not stamp.isdigit() or int(stamp) > time.time() + 300:
            return False
        h = tags.get("h", "")
        plan: Iterable[tuple[str, int, bytes]]
        if len(h) <= PLAN_KEPT_MAX:
            plan, signs_from = _signed_plan(h)
        else:  # walked once, not kept
            plan, signs_from = _plan(h), "from" in h.lower().split(":")
        if not signs_from:
            return False
        try:
            # strict: only the base64 alphabet, padding at the end only (RFC
            # 4648 4); what it refuses, b64decode(validate=True) reads as no
            # octets at all, which never verifies either
            if binascii.a2b_base64(tags.get("bh", ""), strict_mode=True) != self.body_hash():
                return False
            signature = binascii.a2b_base64(tags.get("b", ""), strict_mode=True)
        except ValueError:
            return False
        # RFC 6376 5.4.2: each name takes the next instance from the bottom;
        # a name with no instance left contributes nothing (the null string).
        # RFC 6376 3.7: each signed field with its CRLF, then the signature
        # field itself without one.
        # The index's names are the fields' own, lower-cased: each field's
        # canonical name is the one h= gave it (the plan's "name:").
        instances = self.instances()
        fields = self.fields
        parts: list[bytes] = []
        for name, n, canonical in plan:
            at = instances.get(name)
            if at is not None and n < len(at):
                parts.append(canonical + _relaxed_value(fields[at[n]][1]))
        parts.append(b"dkim-signature:" + _relaxed_value(_without_b(fields[position][1])))
        data = b"\r\n".join(parts)
        try:
            if found[0] == "rsa":
                # RFC 6376 3.3.1: RSASSA-PKCS1-v1_5 over the SHA-256 of the
                # signed data, hashed by hashlib (whose code the body hash
                # has just run) and handed over as such
                found[1].verify(signature, hashlib.sha256(data).digest(), _PKCS1, _SHA256_DONE)  # type: ignore[attr-defined]
            else:
                # RFC 8463 3: Ed25519 signs the SHA-256 of the signed data
                found[1].verify(hashlib.sha256(data).digest(), signature)  # type: ignore[attr-defined]
        except (InvalidSignature, ValueError, nacl.exceptions.CryptoError):
            return False
        return True


@functools.lru_cache(maxsize=256)
def _key_problem(record: str | None) -> tuple[str, str] | None:
    """(result, reason) when the key record rules a signature out before any crypto."""
    if record is None:
        return ("permerror", "no key for signature")
    try:
        tags = dkimpy.util.parse_tag_value(record.encode())
    except Exception:  # noqa: BLE001 - any malformed record is a permerror
        return ("permerror", "malformed key record")
    if not tags.get(b"p"):
        return ("fail", "key revoked")  # RFC 6376 3.6.1: an empty p= revokes the key
    try:
        _pk, size, ktag, _tlsrpt = _public_key(record.encode())
    except dkimpy.DKIMException as exc:
        return ("permerror", f"bad key record: {exc}")
    if ktag == b"rsa" and size < MIN_RSA_BITS:
        return ("fail", f"RSA key of {size} bits is too small")
    return None


# RFC 6376 3.2: a tag-spec named a or d (either case, FWS around the name),
# found from each ";" only (one is put before the first tag-spec)
_ORDER_TAGS = re.compile(rb";[ \t\n\r\x0b\x0c]*([aAdD])[ \t\n\r\x0b\x0c]*=([^;]*)")


def _order_tags(value: bytes) -> dict[str, str]:
    """The a= and d= of a signature field as ``_tags`` reads them (the last
    of each, whitespace out), all ``_order`` looks at: one regex that skips
    from ";" to ";" at C speed, rather than every tag-spec read."""
    return {name.lower().decode("ascii"): text.translate(None, _ASCII_WS).decode("ascii", "replace")
            for name, text in _ORDER_TAGS.findall(b";" + value)}


def _order(tags: dict[str, str], position: int, author_domain: str) -> tuple[int, int, int]:
    """The order ``verify`` tries signatures in when it may stop at the
    first that passes for ``author_domain``: that domain's first, rsa-sha256
    before others (an RSA public-key operation costs a fraction of an Ed25519
    verification), then the order of the fields."""
    return (0 if tags.get("d", "").lower() == author_domain else 1,
            0 if tags.get("a", "").lower() == "rsa-sha256" else 1, position)


def verify(message: bytes, txt: Callable[[str], list[str]], *, allow_sha1: bool = False,
           parsed: tuple[list[tuple[str, bytes]], bytes] | None = None,
           author_domain: str | None = None, index: dict[str, list[int]] | None = None,
           only_fields: bool = False) -> list[DKIMResult]:
    """Check the DKIM-Signatures of ``message`` (at most 10: more are not
    looked at, so a message cannot make the server do unbounded work); one
    result per signature checked, in the order of the fields.

    ``parsed``: the message's header fields (``split_fields``) and body,
    when the caller has them already; ``index``: ``field_index`` of those
    fields, when it has that too; ``only_fields``: the caller found every
    line of the header to be a field or a continuation line
    (``split_plain_fields`` split it), which ``_only_fields`` then need not
    check again.

    ``author_domain``: the RFC5322.From domain, when the caller needs no
    more than DMARC does (RFC 7489 3.1.1: one passing signature whose d= is
    aligned with it; d= equal to it is aligned in both modes). That domain's
    signatures are tried first (``_order``) and checking stops at the first
    that passes: RFC 6376 6.1 lets a Verifier try signatures in any order and
    stop once one verifies. The signatures not checked then are left out of
    the result (RFC 6376 3.9 asks for those that verified or met a temporary
    failure; RFC 8601 2.7.1 has no result for a signature not evaluated):
    one that was not verified is never reported, least of all as pass.

    ``rsa-sha1`` signatures fail (RFC 8301 3.1: verifiers MUST NOT consider
    them valid) unless ``allow_sha1``, which only the interoperability tests
    use, to check another signer's canonicalisation and hashing."""
    if parsed is None:
        header, body = split_header_body(message)
        fields = split_fields(header)
        plain = _only_fields(header)
    elif not message.endswith(body := parsed[1]):
        fields, plain = parsed[0], False  # not this message's parse: dkimpy reads the message
    else:
        fields = parsed[0]
        plain = only_fields or _only_fields(message[:len(message) - len(body)])
    if index is None:
        positions = [i for i, (name, _value) in enumerate(fields) if name.strip().lower() == "dkim-signature"][:10]
    else:
        positions = index.get("dkim-signature", [])[::-1][:10]
    if not positions:
        return []  # nothing to check: the message is not parsed again
    # (index among the signatures, as dkimpy counts them; field position)
    todo = list(enumerate(positions))
    if author_domain:
        author_domain = author_domain.lower().rstrip(".")
        if len(todo) > 1:
            # the order needs a= and d= only: a signature never checked is not read further
            todo.sort(key=lambda item: _order(_order_tags(fields[item[1]][1]), item[1], author_domain))
    results: list[tuple[int, DKIMResult]] = []
    fast = _Fast(fields, body, plain, index)
    slow: list[_Verifier] = []  # dkimpy's parse of the message, made at most once
    for idx, position in todo:
        result = _verify_one(message, txt, fast, slow, idx, position, _tags(fields[position][1]), allow_sha1)
        if result is None:
            continue
        results.append((position, result))
        if author_domain and result.result == "pass" and result.domain == author_domain:
            break
    results.sort(key=lambda item: item[0])
    return [r for _position, r in results]


def _verify_one(message: bytes, txt: Callable[[str], list[str]], fast: _Fast, slow: list[_Verifier], idx: int,
                position: int, tags: dict[str, str], allow_sha1: bool) -> DKIMResult | None:
    """The result of the signature in field ``position`` (the ``idx``-th),
    on the fast path when it passes there, else by dkimpy (its parse of the
    message kept in ``slow`` for the other signatures); None when dkimpy
    finds nothing to check."""
    d, s, a = tags.get("d", ""), tags.get("s", ""), tags.get("a", "")

    def made(result: str, reason: str = "") -> DKIMResult:
        return DKIMResult(result, d.lower(), s, a, reason, tags.get("b", "")[:8])

    if a.lower() == "rsa-sha1" and not allow_sha1:
        return made("fail", "rsa-sha1 is not accepted (RFC 8301)")
    if "l" in tags:
        # RFC 6376 8.2: a body length limit lets content be appended
        # after the signed part; such signatures are not trusted here.
        return made("neutral", "l= is not accepted")
    if "x" not in tags and "z" not in tags:
        # the common case, checked without dkimpy when it passes
        try:
            record_now = next((r for r in txt(f"{s}._domainkey.{d}") if "p=" in r), None)
        except DNSTempError:
            record_now = None
        if record_now is not None and _key_problem(record_now) is None and fast.passes(
                position, tags, record_now):
            return made("pass")
    if not slow:
        try:
            slow.append(_Verifier(message, logger=_quiet, minkey=MIN_RSA_BITS))
        except Exception as exc:  # noqa: BLE001 - dkimpy's parser breaks in more ways than it declares
            # a header line that is no field (RFC 5322 2.2), a continuation
            # of none: nothing here is what the signer canonicalised
            # (RFC 6376 3.4.2). The checks must still give their verdict
            # (DMARC fails such a message), never break on a hostile one.
            return made("neutral", f"malformed header: {type(exc).__name__} {exc}"[:120])
    checker = slow[0]
    try:
        prep = checker.verify_headerprep(idx)
    except Exception as exc:  # noqa: BLE001 - any malformed signature field is neutral
        text = str(exc)
        if isinstance(exc, dkimpy.DKIMException) and "x= value is past" in text:
            # RFC 6376 3.5 x=: past the expiry (dkimpy allows 10 hours of clock skew)
            return made("fail", "signature expired")
        return made("neutral", text[:120])
    if not prep:
        return None
    name = f"{s}._domainkey.{d}"
    try:
        found = txt(name)
    except DNSTempError as exc:
        return made("temperror", f"key lookup: {exc}"[:120])
    record = next((r for r in found if "p=" in r), found[0] if found else None)
    problem = _key_problem(record)
    if problem is not None:
        return made(*problem)
    checker.record = record.encode()  # type: ignore[union-attr]
    sig, include, sigheaders = prep
    try:
        ok = checker.verify_sig(sig, include, sigheaders[idx], None)
    except Exception as exc:  # noqa: BLE001 - whatever breaks, the signature did not verify
        text = str(exc)
        return made("fail", "body hash did not verify" if "body hash" in text else text[:120])
    return made("pass") if ok else made("fail", "signature did not verify")
