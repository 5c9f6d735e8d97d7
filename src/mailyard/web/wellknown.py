"""Files that other programs fetch from the web server of a mail domain:

* the MTA-STS policy (RFC 8461 3.2) at ``/.well-known/mta-sts.txt`` for
  ``Host: mta-sts.DOMAIN`` of every local domain, from ``[mta_sts]``;
* Thunderbird's autoconfiguration file (``clientConfig`` version 1.1) at
  ``/.well-known/autoconfig/mail/config-v1.1.xml`` and
  ``/mail/config-v1.1.xml`` (the latter on ``Host: autoconfig.DOMAIN``),
  for the domain of ``?emailaddress=`` or of the Host;
* Microsoft's Autodiscover in its "plain old XML" form (``POST
  /autodiscover/autodiscover.xml``, the Outlook request and response
  schemas of 2006/2006a), with a small bounded request body
  (web/bodies.py) and no DTD accepted;
* an Apple configuration profile (``/mobileconfig``, ``.mobileconfig``
  plist, ``com.apple.mail.managed`` payload) for the logged-in webmail
  user. The profile is not signed: devices show it as "unverified".

Every answer describes the running configuration: ``[server] hostname``
and the ``[ports]`` that are on, implicit TLS preferred (RFC 8314 4.1:
"SHOULD prefer" implicit TLS), STARTTLS as second choice.
"""

from __future__ import annotations

import plistlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..mailauth.records import served_policy
from ..message.address import is_valid_addr_spec

if TYPE_CHECKING:
    from ..config import Config
    from ..services import Services
    from .security import Session

AUTODISCOVER_PATHS = ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml")
AUTODISCOVER_MAX = 8 * 1024
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,62}\.)*[a-z0-9-]{1,63}$")


@dataclass(frozen=True)
class Endpoint:
    """One way in for a mail client: protocol, port and TLS mode."""

    protocol: str  # "imap", "pop3", "smtp"
    port: int
    tls: str  # "SSL" (implicit, RFC 8314) or "STARTTLS"


def endpoints(cfg: Config) -> list[Endpoint]:
    """The client ports that are on, in order of preference."""
    p = cfg.ports
    out = [Endpoint("imap", p.imaps, "SSL"), Endpoint("imap", p.imap, "STARTTLS"),
           Endpoint("pop3", p.pop3s, "SSL"), Endpoint("pop3", p.pop3, "STARTTLS"),
           Endpoint("smtp", p.smtps, "SSL"), Endpoint("smtp", p.submission, "STARTTLS")]
    return [e for e in out if e.port]


def _services(request: Request) -> Services:
    return request.app.state.web.services


def _host(request: Request) -> str:
    """The Host header's name, without a port."""
    host = (request.headers.get("host") or "").strip().lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.partition(":")[0].rstrip(".")


async def _local(services: Services, domain: str) -> str | None:
    domain = domain.lower().rstrip(".")
    if not _DOMAIN.match(domain):
        return None
    return domain if await services.store.is_local_domain(domain) else None


# --- MTA-STS ---------------------------------------------------------------------------
async def mta_sts(request: Request) -> Response:
    """RFC 8461 3.2: text/plain, for Host ``mta-sts.DOMAIN`` of a local domain."""
    services = _services(request)
    host = _host(request)
    if not host.startswith("mta-sts.") or await _local(services, host[8:]) is None:
        return PlainTextResponse("no MTA-STS policy here\n", status_code=404)
    sts = services.config.mta_sts
    return Response(served_policy(sts.mode, sts.mx, sts.max_age, services.config.server.hostname),
                    media_type="text/plain",
                    headers={"Cache-Control": "no-store"})


# --- Thunderbird autoconfig ----------------------------------------------------------------
def autoconfig_xml(cfg: Config, domain: str) -> bytes:
    """A ``clientConfig`` version 1.1 document for ``domain``."""
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    ET.SubElement(provider, "domain").text = domain
    ET.SubElement(provider, "displayName").text = f"{domain} mail"
    ET.SubElement(provider, "displayShortName").text = domain
    host = cfg.server.hostname.rstrip(".")
    for ep in endpoints(cfg):
        tag, kind = ("outgoingServer", "smtp") if ep.protocol == "smtp" else ("incomingServer", ep.protocol)
        server = ET.SubElement(provider, tag, type=kind)
        ET.SubElement(server, "hostname").text = host
        ET.SubElement(server, "port").text = str(ep.port)
        ET.SubElement(server, "socketType").text = ep.tls
        ET.SubElement(server, "authentication").text = "password-cleartext"  # over TLS only
        ET.SubElement(server, "username").text = "%EMAILADDRESS%"
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode").encode()


async def autoconfig(request: Request) -> Response:
    services = _services(request)
    given = request.query_params.get("emailaddress", "")
    domain = None
    if given:
        if is_valid_addr_spec(given):
            domain = await _local(services, given.rpartition("@")[2])
    else:
        host = _host(request)
        domain = await _local(services, host[11:] if host.startswith("autoconfig.") else host)
    if domain is None:
        return PlainTextResponse("no configuration for this domain\n", status_code=404)
    return Response(autoconfig_xml(services.config, domain), media_type="application/xml")


# --- Microsoft Autodiscover (POX) -------------------------------------------------------------
def autodiscover_xml(cfg: Config, address: str) -> bytes:
    """The Outlook POX response (responseschema 2006a) for ``address``."""
    ET.register_namespace("", RESPONSE_NS)
    root = ET.Element(f"{{{RESPONSE_NS}}}Autodiscover")
    response = ET.SubElement(root, f"{{{OUTLOOK_NS}}}Response")
    account = ET.SubElement(response, f"{{{OUTLOOK_NS}}}Account")
    ET.SubElement(account, f"{{{OUTLOOK_NS}}}AccountType").text = "email"
    ET.SubElement(account, f"{{{OUTLOOK_NS}}}Action").text = "settings"
    host = cfg.server.hostname.rstrip(".")
    chosen: dict[str, Endpoint] = {}
    for ep in endpoints(cfg):
        chosen.setdefault(ep.protocol, ep)
    for ep in chosen.values():
        proto = ET.SubElement(account, f"{{{OUTLOOK_NS}}}Protocol")
        for name, value in (("Type", ep.protocol.upper()), ("Server", host), ("Port", str(ep.port)),
                            ("LoginName", address), ("DomainRequired", "off"), ("SPA", "off"),
                            ("SSL", "on"), ("Encryption", "SSL" if ep.tls == "SSL" else "TLS"),
                            ("AuthRequired", "on")):
            ET.SubElement(proto, f"{{{OUTLOOK_NS}}}{name}").text = value
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode").encode()


def _request_address(body: bytes) -> str | None:
    """The EMailAddress of an Autodiscover request; None when it has none
    or is not plain XML (a DTD is refused: no entity tricks)."""
    if b"<!" in body:
        return None
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.rpartition("}")[2] == "EMailAddress" and el.text:
            return el.text.strip()
    return None


async def autodiscover(request: Request) -> Response:
    services = _services(request)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > AUTODISCOVER_MAX:
            return PlainTextResponse("request too large\n", status_code=413)
    address = _request_address(body)
    if address is None or not is_valid_addr_spec(address):
        return PlainTextResponse("an Autodiscover request with an EMailAddress is expected\n", status_code=400)
    if await _local(services, address.rpartition("@")[2]) is None:
        return PlainTextResponse("no configuration for this domain\n", status_code=404)
    return Response(autodiscover_xml(services.config, address), media_type="application/xml")


# --- Apple configuration profile ------------------------------------------------------------
def mobileconfig(cfg: Config, address: str) -> bytes:
    """An unsigned configuration profile with one mail account for ``address``
    (UUIDs derived from the address, so a second install replaces the first)."""
    host = cfg.server.hostname.rstrip(".")
    eps = endpoints(cfg)
    incoming = next((e for e in eps if e.protocol == "imap"), None) or next(
        (e for e in eps if e.protocol == "pop3"), None)
    outgoing = next((e for e in eps if e.protocol == "smtp"), None)
    domain = address.rpartition("@")[2]
    ident = ".".join(reversed(domain.split(".")))
    account: dict[str, Any] = {
        "PayloadType": "com.apple.mail.managed", "PayloadVersion": 1,
        "PayloadIdentifier": f"{ident}.mailyard.mail", "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                                                     f"mail:{address}")).upper(),
        "PayloadDisplayName": address, "EmailAccountDescription": address, "EmailAddress": address,
        "EmailAccountType": "EmailTypePOP" if incoming and incoming.protocol == "pop3" else "EmailTypeIMAP",
    }
    if incoming is not None:
        account.update({"IncomingMailServerHostName": host, "IncomingMailServerPortNumber": incoming.port,
                        "IncomingMailServerUseSSL": True, "IncomingMailServerUsername": address,
                        "IncomingMailServerAuthentication": "EmailAuthPassword"})
    if outgoing is not None:
        account.update({"OutgoingMailServerHostName": host, "OutgoingMailServerPortNumber": outgoing.port,
                        "OutgoingMailServerUseSSL": True, "OutgoingMailServerUsername": address,
                        "OutgoingMailServerAuthentication": "EmailAuthPassword",
                        "OutgoingPasswordSameAsIncomingPassword": True})
    profile = {
        "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadContent": [account],
        "PayloadIdentifier": f"{ident}.mailyard", "PayloadDisplayName": f"Mail for {address}",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"profile:{address}")).upper(),
        "PayloadRemovalDisallowed": False,
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)


def routes(current: Callable[[Request], Session]) -> list[Route]:
    """The routes to mount; ``current`` gives the logged-in session (401 without)."""

    async def profile(request: Request) -> Response:
        session = current(request)
        name = re.sub(r"[^A-Za-z0-9._-]", "_", session.address)
        return Response(mobileconfig(_services(request).config, session.address),
                        media_type="application/x-apple-aspen-config",
                        headers={"Content-Disposition": f'attachment; filename="{name}.mobileconfig"'})

    return [
        Route("/.well-known/mta-sts.txt", mta_sts),
        Route("/.well-known/autoconfig/mail/config-v1.1.xml", autoconfig),
        Route("/mail/config-v1.1.xml", autoconfig),
        *[Route(path, autodiscover, methods=["POST"]) for path in AUTODISCOVER_PATHS],
        Route("/mobileconfig", profile),
    ]
