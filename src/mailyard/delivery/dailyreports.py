"""The daily aggregate reports the queue runner sends: TLS-RPT (RFC 8460)
of the TLS outcomes of outbound sessions, and DMARC (RFC 7489 7.2) of what
the MX port's checks saw.

``DailyReportsMixin`` is mixed into ``OutboundQueue`` (queue.py), whose
runner looks once a minute for days that have ended (``_reports_due``) and
queues each day's reports to the ``rua`` addresses the policy domains
publish in DNS. The reports themselves are built from per-day event files
by tlsrpt.py and dmarcrpt.py (over dailylog.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .. import logs
from .dmarcrpt import (
    DMARCReports,
    needs_verification,
    report_destinations,
    verification_name,
    verified,
)
from .dmarcrpt import build_reports as build_dmarc_reports
from .dmarcrpt import report_message as dmarc_report_message
from .mx import MXResolver, TemporaryDNSError
from .router import Router, Verdict
from .tlsrpt import build_reports, mailto_addresses, parse_rua, report_message

if TYPE_CHECKING:
    from ..store.api import Store
    from .tlspolicy import TransportSecurity

# the queue runner's log: the reports' lines are the runner's
log = logging.getLogger("mailyard.queue")


class DailyReportsMixin:
    """Sending the daily reports, for ``OutboundQueue``: its ``security``
    (None: no TLS-RPT) and ``dmarc_reports`` (None: no DMARC reports) say
    what to send, its ``enqueue`` sends it."""

    # set by OutboundQueue.__init__
    store: Store
    router: Router
    hostname: str
    mx: MXResolver
    security: TransportSecurity | None
    dmarc_reports: DMARCReports | None
    _reports_checked: float  # time.monotonic() of the last look for days due
    enqueue: Callable[..., Awaitable[int | None]]

    # --- TLS reports (RFC 8460) ------------------------------------------------------
    async def _reports_due(self) -> None:
        """Once a minute: mail the TLS and DMARC reports of days that have ended."""
        if time.monotonic() - self._reports_checked < 60:
            return
        self._reports_checked = time.monotonic()
        security = self.security
        kinds = [("tlsrpt", security.reports if security is not None else None, self.send_tls_reports),
                 ("dmarc", self.dmarc_reports, self.send_dmarc_reports)]
        for name, reports, send in kinds:
            if reports is None:
                continue
            for day in await asyncio.to_thread(reports.days_due):
                try:
                    await send(day)
                except TemporaryDNSError as exc:
                    log.info("%s: reports of %s wait: %s", name, day, exc)
                    break

    async def send_tls_reports(self, day: str) -> int:
        """Queue the reports of ``day`` to each policy domain's ``rua``
        addresses; returns how many messages were queued."""
        assert self.security is not None and self.security.reports is not None
        reports = self.security.reports
        lines = await asyncio.to_thread(reports.lines, day)
        domains = await self.store.list_domains()
        submitter = self.hostname
        own = domains[0] if domains else self.hostname
        built = build_reports(day, lines, organization=own, contact=f"postmaster@{own}")
        sent = 0
        for domain, report in built.items():
            rua = await self._rua(domain)
            rcpts = mailto_addresses(rua)
            if not rcpts:
                continue
            body = report_message(report, policy_domain=domain, submitter=submitter,
                                  sender=f"tlsrpt-noreply@{own}", recipients=rcpts)
            await self.enqueue(body, "", rcpts)
            logs.event(log, logging.INFO, "tlsrpt_sent", domain=domain, to=rcpts, day=day)
            sent += 1
        await asyncio.to_thread(reports.mark_sent, day)
        return sent

    async def _rua(self, domain: str) -> list[str]:
        """The ``rua`` URIs of ``_smtp._tls.DOMAIN`` (RFC 8460 3)."""
        return parse_rua(await self._txt(f"_smtp._tls.{domain}"))

    async def _txt(self, name: str) -> list[str]:
        """The TXT records at ``name`` (none for NXDOMAIN or NODATA);
        TemporaryDNSError when DNS does not answer."""
        import dns.exception
        import dns.resolver

        try:
            answer = await self.mx.resolver.resolve(name, "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise TemporaryDNSError(f"TXT {name}: {exc.__class__.__name__}") from exc
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]

    # --- DMARC aggregate reports (RFC 7489 7.2) ----------------------------------------
    async def send_dmarc_reports(self, day: str) -> int:
        """Queue the aggregate reports of ``day`` to each policy domain's
        ``rua`` addresses (delivery/dmarcrpt.py); returns how many messages
        were queued. A destination that DNS does not confirm (RFC 7489 7.1),
        or whose size limit the report passes, is left out."""
        assert self.dmarc_reports is not None
        reports = self.dmarc_reports
        lines = await asyncio.to_thread(reports.lines, day)
        domains = await self.store.list_domains()
        own = domains[0] if domains else self.hostname
        built = await asyncio.to_thread(build_dmarc_reports, day, lines, organization=own,
                                        contact=f"postmaster@{own}")
        sent = 0
        for domain, (xml, rua) in built.items():
            rcpts = []
            for address, limit in report_destinations(rua):
                if needs_verification(domain, address):
                    try:
                        confirmed = verified(await self._txt(verification_name(domain, address)))
                    except TemporaryDNSError as exc:
                        # not confirmed this time: the day's other reports
                        # still go, and the day is closed (no report twice)
                        confirmed, why = False, f"DNS did not answer the RFC 7489 7.1 check: {exc}"
                    else:
                        why = "destination not confirmed in DNS (RFC 7489 7.1)"
                    if not confirmed:
                        logs.event(log, logging.INFO, "dmarc_report_refused", domain=domain, to=address, reason=why)
                        continue
                body = dmarc_report_message(xml, policy_domain=domain, submitter=self.hostname,
                                            sender=f"dmarc-noreply@{own}", recipients=[address])
                if limit is not None and len(body) > limit:
                    logs.event(log, logging.INFO, "dmarc_report_refused", domain=domain, to=address,
                               reason=f"report of {len(body)} octets over the limit of {limit}")
                    continue
                rcpts.append(address)
            if not rcpts:
                continue
            body = dmarc_report_message(xml, policy_domain=domain, submitter=self.hostname,
                                        sender=f"dmarc-noreply@{own}", recipients=rcpts)
            local, remote = [], []
            for address in rcpts:
                resolution = await self.router.resolve(address)
                if resolution.verdict is Verdict.LOCAL:
                    local.extend(resolution.accounts)
                    remote.extend(resolution.remote)
                elif resolution.verdict is Verdict.REMOTE:
                    remote.extend(resolution.remote)
            # RFC 3834 3.3 / RFC 5321 4.5.5: a report's reverse-path is null
            await self.enqueue(body, "", remote, accounts=local)
            logs.event(log, logging.INFO, "dmarc_report_sent", domain=domain, to=rcpts, day=day)
            sent += 1
        await asyncio.to_thread(reports.mark_sent, day)
        return sent
