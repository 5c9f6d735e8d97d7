"""ARC, the Authenticated Received Chain (RFC 8617), on dkimpy.

Verification: ``verify`` checks the ARC sets of a received message and
gives the chain validation result for Authentication-Results (RFC 8617
4.4 and 5.2; RFC 8601 2.7.x ``arc=``): ``none`` (no ARC set), ``pass`` or
``fail``. Key records are looked up through the injected ``txt`` function
(``dnscache.Resolver.txt``), as for DKIM.

Sealing: ``seal`` returns the ARC set a forwarder adds (RFC 8617 5.1):
ARC-Authentication-Results (this server's Authentication-Results, as the
MX port wrote them, under its authserv-id), ARC-Message-Signature (over the
message, relaxed/relaxed, like a DKIM signature) and ARC-Seal (over the
ARC sets, ``cv=`` the chain's result at receipt). dkimpy seals with
rsa-sha256 only (RFC 8617 has no other algorithm yet); the RSA operation is
done by OpenSSL as in ``dkim.sign``. No field of ours (the message was not
checked here, e.g. a local user's): no seal, as dkimpy decides (RFC 8617
5.1.1: the AAR records this ADMD's results, there are none).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import dkim as dkimpy

from ..message.headers import split_fields
from ..message.parse import split_header_body
from .dkim import MIN_RSA_BITS, SIGNED_FIELDS, _OpenSSLRSA, _rsa_key
from .dnscache import DNSTempError
from .keys import SigningKeys

_quiet = logging.getLogger("mailyard.mailauth.arcpy")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False

_ARC_FIELDS = frozenset({"arc-seal", "arc-message-signature", "arc-authentication-results"})
# RFC 8617 4.2.1: at most 50 ARC sets; a longer chain fails without crypto.
MAX_SETS = 50


@dataclass(frozen=True)
class ARCResult:
    result: str  # none, pass, fail
    reason: str = ""
    instances: int = 0  # the highest i= seen


class _ARC(dkimpy.ARC):
    """dkimpy's ARC signer with the RSA operation done by OpenSSL (see ``dkim._DKIM``)."""

    rsa_key = None

    def gen_header(self, fields, include_headers, canon_policy, header_name, pk, standardize=False):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201
        if self.signature_algorithm != b"rsa-sha256" or self.rsa_key is None:
            return super().gen_header(fields, include_headers, canon_policy, header_name, pk, standardize)
        self.signature_algorithm = b"ed25519-sha256"
        try:
            return super().gen_header(fields, include_headers, canon_policy, header_name,
                                      _OpenSSLRSA(self.rsa_key), standardize)
        finally:
            self.signature_algorithm = b"rsa-sha256"


_NONE = ARCResult("none")


def _instances(fields: list[tuple[str, bytes]]) -> int:
    """How many ARC fields the header holds (0: no chain, nothing to parse)."""
    return sum(1 for name, _value in fields if name.lower() in _ARC_FIELDS)


def verify(message: bytes, txt: Callable[[str], list[str]],
           fields: list[tuple[str, bytes]] | None = None, index: dict[str, list[int]] | None = None) -> ARCResult:
    """The chain validation result of ``message`` (RFC 8617 5.2); ``fields``:
    its header fields when the caller has them already, ``index``: their
    positions by lower-case name (``dkim.field_index``)."""
    if index is not None and _ARC_FIELDS.isdisjoint(index):
        return _NONE  # no ARC field: the common message, nothing to count
    if fields is None:
        fields = split_fields(split_header_body(message)[0])
    count = _instances(fields) if index is None else sum(len(index.get(name, ())) for name in _ARC_FIELDS)
    if count == 0:
        return _NONE
    if count > 3 * MAX_SETS:
        return ARCResult("fail", "too many ARC sets", count // 3)
    temp: list[str] = []

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            found = txt(name.decode("ascii", "replace").rstrip("."))
        except DNSTempError as exc:
            temp.append(str(exc))
            return None
        record = next((r for r in found if "p=" in r), found[0] if found else None)
        return record.encode() if record is not None else None

    try:
        cv, results, reason = dkimpy.ARC(message, logger=_quiet, minkey=MIN_RSA_BITS).verify(dnsfunc=dnsfunc)
    except Exception as exc:  # noqa: BLE001 - any malformed chain is a failed chain
        return ARCResult("fail", str(exc)[:120])
    instances = max((r.get("instance", 0) for r in results), default=0)
    if cv == dkimpy.CV_Pass:
        return ARCResult("pass", f"i={instances}", instances)
    if temp:
        # RFC 8617 has no temperror for the chain; it fails, and says why
        return ARCResult("fail", f"key lookup: {temp[0]}"[:120], instances)
    text = reason if isinstance(reason, str) else str(reason)
    return ARCResult("fail", text[:120], instances)


def _signed_fields(header: bytes) -> list[bytes]:
    """The AMS header set: the DKIM set (RFC 6376 5.4.1) where present (RFC
    8617 4.1.2 leaves the choice to the sealer; never ARC-Seal,
    Authentication-Results or the trace and signature fields dkimpy refuses)."""
    present = {name.lower() for name, _value in split_fields(header)}
    out = [name.encode() for name in SIGNED_FIELDS if name in present]
    if b"from" not in out:
        out.insert(0, b"from")
    return out


def seal(message: bytes, keys: SigningKeys, authserv_id: str, timestamp: int | None = None) -> bytes:
    """The ARC set for ``message`` (CRLF lines, AS first), to prepend; ``b""``
    when the message holds no Authentication-Results of ``authserv_id``."""
    header, _body = split_header_body(message)
    sealer = _ARC(message, logger=_quiet, signature_algorithm=b"rsa-sha256", linesep=b"\r\n")
    sealer.rsa_key = _rsa_key(keys.rsa_pem)
    fields = sealer.sign(keys.rsa_selector.encode(), keys.domain.encode(), keys.rsa_pem, authserv_id.encode(),
                         include_headers=_signed_fields(header), timestamp=timestamp)
    return b"".join(fields)
