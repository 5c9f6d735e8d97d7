"""DANE for SMTP (RFC 7672): TLSA records authenticate an MX host's certificate.

DANE needs DNSSEC. mailyard does not validate signatures itself: it trusts
the AD ("authentic data") bit of a validating resolver it is pointed at
(``[delivery] nameservers``, e.g. unbound on loopback) when ``[delivery]
dnssec = true`` (RFC 7672 2.1.1 leaves validation to such a resolver; RFC
6698 4.1 the trust in the AD bit to a secure path to it, which loopback is).

``DANE.lookup(domain, host, port)`` answers with the TLSA records that apply
to one MX host, following RFC 7672 2.2:

* only when the MX RRset of ``domain`` is secure (AD set) are TLSA records
  looked up at all (2.2.1: an insecure MX name gives no DANE);
* ``_PORT._tcp.HOST`` TLSA is queried; an insecure answer or a secure
  denial means no DANE for the host; a DNS failure is a temporary failure
  of that host (2.2.1: "the MX host is skipped");
* among the records, usage 3 (DANE-EE) and 2 (DANE-TA) are usable (3.1:
  PKIX-TA and PKIX-EE are not for SMTP), with selector 0 (certificate) or
  1 (SubjectPublicKeyInfo) and matching type 0 (exact), 1 (SHA-256) or 2
  (SHA-512); a secure RRset with no usable record still requires TLS,
  unauthenticated (2.2).

``verify(chain, records, names)`` checks a peer's certificate chain (leaf
first, DER) against them: DANE-EE matches the leaf alone, with neither name
nor validity checks (3.1.1); DANE-TA matches a certificate of the chain
that the leaf chains up to by signatures, and then the leaf must be valid
now and carry one of ``names`` (3.1.2, 3.2.2).
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.resolver
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

DANE_TA, DANE_EE = 2, 3


class DANETempError(Exception):
    """The TLSA lookup failed: try the host later (RFC 7672 2.2.1)."""


@dataclass(frozen=True)
class TLSA:
    usage: int
    selector: int
    mtype: int
    data: bytes

    def text(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"


@dataclass(frozen=True)
class DANEResult:
    """``records``: the usable TLSA records; ``required`` is True when a
    secure TLSA RRset exists at all (TLS is then mandatory, 2.2)."""

    records: tuple[TLSA, ...] = ()
    required: bool = False


def dnssec_resolver(resolver: dns.asyncresolver.Resolver) -> dns.asyncresolver.Resolver:
    """``resolver`` asking for DNSSEC status: AD and DO set on queries
    (RFC 6840 5.7: AD in a query asks for the AD bit in the answer)."""
    resolver.use_edns(0, dns.flags.DO, 1232)
    resolver.flags = dns.flags.RD | dns.flags.AD
    return resolver


def _secure(answer: dns.resolver.Answer) -> bool:
    return bool(answer.response.flags & dns.flags.AD)


class DANE:
    """TLSA lookups through a validating resolver (module docstring)."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self.resolver = dnssec_resolver(resolver)

    async def mx_secure(self, domain: str) -> bool:
        try:
            answer = await self.resolver.resolve(domain, "MX", search=False, raise_on_no_answer=False)
        except dns.exception.DNSException:
            return False
        return _secure(answer)

    async def lookup(self, domain: str, host: str, port: int) -> DANEResult:
        """The TLSA records for MX ``host`` of ``domain`` (module docstring)."""
        if not await self.mx_secure(domain):
            return DANEResult()
        name = f"_{port}._tcp.{host.rstrip('.')}"
        try:
            answer = await self.resolver.resolve(name, "TLSA", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return DANEResult()
        except dns.exception.DNSException as exc:
            raise DANETempError(f"TLSA lookup of {name} failed: {exc.__class__.__name__}") from exc
        if not _secure(answer):
            return DANEResult()
        usable = tuple(TLSA(r.usage, r.selector, r.mtype, bytes(r.cert)) for r in answer
                       if r.usage in (DANE_TA, DANE_EE) and r.selector in (0, 1) and r.mtype in (0, 1, 2))
        return DANEResult(usable, True)


def _selected(cert: x509.Certificate, der: bytes, selector: int) -> bytes:
    if selector == 0:
        return der
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _digest(data: bytes, mtype: int) -> bytes:
    if mtype == 1:
        return hashlib.sha256(data).digest()
    if mtype == 2:
        return hashlib.sha512(data).digest()
    return data


def matches(record: TLSA, der: bytes) -> bool:
    """Whether certificate ``der`` matches ``record`` (RFC 6698 2.1.2, 2.1.3)."""
    cert = x509.load_der_x509_certificate(der)
    return _digest(_selected(cert, der, record.selector), record.mtype) == record.data


def _name_ok(cert: x509.Certificate, names: Sequence[str]) -> bool:
    """RFC 7672 3.2.3: a DNS-ID (SAN dNSName, or the CN without SANs),
    with a wildcard standing for the leftmost label only."""
    try:
        ids = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        ids = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
               if isinstance(a.value, str)]
    wanted = {n.lower().rstrip(".") for n in names}
    for ident in ids:
        ident = ident.lower().rstrip(".")
        if ident in wanted:
            return True
        if ident.startswith("*."):
            if any(n.partition(".")[2] == ident[2:] and n.partition(".")[0] for n in wanted):
                return True
    return False


def verify(chain: Sequence[bytes], records: Sequence[TLSA], names: Sequence[str],
           now: datetime.datetime | None = None) -> str | None:
    """None when the peer's ``chain`` (leaf first, DER) is authenticated by
    one of ``records`` (module docstring), else the reason it is not."""
    try:
        return _verify(chain, records, names, now)
    except ValueError as exc:  # a certificate the peer sent does not parse
        return f"the server's certificate cannot be read: {exc}"


def _verify(chain: Sequence[bytes], records: Sequence[TLSA], names: Sequence[str],
            now: datetime.datetime | None) -> str | None:
    if not chain:
        return "the server sent no certificate"
    if not records:
        return "no usable TLSA record"
    leaf_der = chain[0]
    for record in records:
        if record.usage == DANE_EE and matches(record, leaf_der):
            return None
    certs = [x509.load_der_x509_certificate(d) for d in chain]
    now = now or datetime.datetime.now(datetime.UTC)
    for record in records:
        if record.usage != DANE_TA:
            continue
        for index in range(1, len(chain)):
            if not matches(record, chain[index]):
                continue
            try:
                for i in range(index):
                    certs[i].verify_directly_issued_by(certs[i + 1])
            except (ValueError, TypeError, Exception):  # noqa: BLE001 - InvalidSignature and kin
                return "the certificate chain does not lead to the DANE-TA trust anchor"
            leaf = certs[0]
            if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
                return "the certificate is expired or not yet valid"
            if not _name_ok(leaf, names):
                return f"the certificate is not for {', '.join(names)}"
            return None
    return "no TLSA record matches the server's certificate"


def peer_chain(ssl_object: object) -> list[bytes]:
    """The chain the peer sent, leaf first, DER (before Python 3.13 only the
    private ``_sslobj`` has it; without it, the leaf alone)."""
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        inner = getattr(ssl_object, "_sslobj", None)
        getter = getattr(inner, "get_unverified_chain", None)
    if getter is not None:
        import _ssl

        chain = getter() or []
        return [c if isinstance(c, bytes) else c.public_bytes(_ssl.ENCODING_DER) for c in chain]
    leaf = ssl_object.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    return [leaf] if leaf else []
