"""Which TLS an outgoing connection to one MX host must have, from the
receiving domain's DANE TLSA records (delivery/dane.py, RFC 7672) or its
MTA-STS policy (delivery/mtasts.py, RFC 8461), and where the outcome is
reported (delivery/tlsrpt.py, RFC 8460).

``TransportSecurity.plan(domain, policy, host)`` gives a ``TLSPlan``:

* DANE first (RFC 8461 2: a domain with DANE TLSA records is held to
  them, not to its MTA-STS policy): STARTTLS required, and the peer's
  certificate chain checked against the TLSA records after the handshake;
* else an MTA-STS policy: the MX host must match one of its ``mx``
  patterns (4.1), STARTTLS is required and the certificate must be valid
  for the MX host name through the CAs (4.2). In ``enforce`` mode a
  failure defers the mail (5.1: "MUST NOT deliver"; a temporary 4.7.5 so
  the queue retries); in ``testing`` mode the failure is reported and the
  mail goes out as without a policy (5.2);
* else the configured opportunistic (RFC 7435) or required STARTTLS.

The queue runner (delivery/queue.py) applies the plan and calls ``record``
with each session's outcome.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from .dane import DANE, TLSA, DANETempError
from .mtasts import Lookup, PolicyResolver
from .tlsrpt import TLSReports

log = logging.getLogger("mailyard.tlspolicy")


@dataclass(frozen=True)
class ReportPolicy:
    """The policy a session's outcome is reported under (RFC 8460 4.4 ``policy``)."""

    policy_type: str  # "sts", "tlsa" or "no-policy-found"
    domain: str
    strings: tuple[str, ...] = ()
    mx: tuple[str, ...] = ()


@dataclass(frozen=True)
class TLSPlan:
    """How to reach one MX host. ``starttls``: the SMTP client engine's
    policy; ``verify``: PKIX check of the certificate and the host name
    (against ``cafile``, or the system's CAs); ``dane``: check the chain
    against ``tlsa`` after the handshake; ``enforce``: a TLS failure defers
    instead of falling back; ``refuse``: the host must not be used at all
    (why); ``report``: where the outcome is recorded (None: nowhere)."""

    starttls: str = "opportunistic"
    verify: bool = False
    cafile: str | None = None
    dane: bool = False
    tlsa: tuple[TLSA, ...] = ()
    enforce: bool = False
    refuse: str | None = None
    report: ReportPolicy | None = None

    def fallback(self, starttls: str) -> TLSPlan:
        """The plan once a testing-mode policy failed: as without one."""
        return replace(self, starttls=starttls, verify=False, dane=False, tlsa=(), enforce=False, refuse=None)


class TransportSecurity:
    """DANE, MTA-STS and TLS-RPT for outgoing connections (module docstring).
    Each part is optional (None: off). ``starttls`` is ``[delivery]
    starttls``, ``port`` the MX port (the TLSA name's ``_PORT._tcp``)."""

    def __init__(self, *, sts: PolicyResolver | None = None, dane: DANE | None = None,
                 reports: TLSReports | None = None, cafile: str | None = None,
                 starttls: str = "opportunistic", port: int = 25) -> None:
        self.sts = sts
        self.dane = dane
        self.reports = reports
        self.cafile = cafile
        self.starttls = starttls
        self.port = port

    async def destination(self, domain: str) -> Lookup:
        """The MTA-STS policy of ``domain`` (a failed fetch is reported here)."""
        if self.sts is None:
            return Lookup(None)
        found = await self.sts.lookup(domain)
        if found.failure is not None:
            policy = found.policy
            self.record(ReportPolicy("sts" if policy else "no-policy-found", domain,
                                     tuple(policy.lines()) if policy else (), policy.mx if policy else ()),
                        success=False, result_type=found.failure, reason=found.detail)
        return found

    async def plan(self, domain: str, sts: Lookup, host: str) -> TLSPlan:
        """The plan for MX ``host`` of ``domain`` (module docstring);
        DANETempError when its TLSA records could not be looked up."""
        if self.dane is not None:
            try:
                found = await self.dane.lookup(domain, host, self.port)
            except DANETempError as exc:
                self.record(ReportPolicy("tlsa", domain), success=False, result_type="dnssec-invalid",
                            receiving_mx=host, reason=str(exc))
                raise
            if found.required:
                report = ReportPolicy("tlsa", domain, tuple(r.text() for r in found.records))
                return TLSPlan(starttls="require", dane=bool(found.records), tlsa=found.records, enforce=True,
                               report=report)
        policy = sts.policy
        if policy is None:
            return TLSPlan(starttls=self.starttls)
        report = ReportPolicy("sts", domain, tuple(policy.lines()), policy.mx)
        enforce = policy.mode == "enforce"
        if not policy.matches(host):
            reason = f"MX host {host} does not match the MTA-STS policy of {domain}"
            if enforce:
                return TLSPlan(refuse=reason, enforce=True, report=report)
            self.record(report, success=False, result_type="validation-failure", receiving_mx=host, reason=reason)
            return TLSPlan(starttls=self.starttls)  # testing mode: delivered, reported (RFC 8461 5.2)
        return TLSPlan(starttls="require", verify=True, cafile=self.cafile, enforce=enforce, report=report)

    def record(self, report: ReportPolicy | None, *, success: bool, result_type: str | None = None,
               sending_ip: str | None = None, receiving_mx: str | None = None, receiving_ip: str | None = None,
               reason: str | None = None) -> None:
        """One session's outcome for TLS-RPT (nothing without a policy or reports)."""
        if report is None or self.reports is None:
            return
        self.reports.record(policy_type=report.policy_type, policy_domain=report.domain,
                            policy_strings=report.strings, mx_patterns=report.mx, success=success,
                            result_type=result_type, sending_ip=sending_ip, receiving_mx=receiving_mx,
                            receiving_ip=receiving_ip, reason=reason)
