"""What the web server publishes for other programs (web/wellknown.py): the
MTA-STS policy (RFC 8461 3.2), Thunderbird autoconfig, Microsoft
Autodiscover (POX) and the Apple configuration profile, over HTTP with the
Host header, checked against the running configuration."""

from __future__ import annotations

import plistlib
from xml.etree import ElementTree as ET

import pytest

from mailyard.config import Config
from mailyard.delivery.mtasts import parse_policy

from ..conftest import RunningServer
from .test_web_http import login

httpx = pytest.importorskip("httpx")

ALICE = "alice@example.test"


def get(server: RunningServer, path: str, host: str, **kw: object) -> httpx.Response:
    url = f"http://127.0.0.1:{server.port('http')}{path}"
    return httpx.get(url, headers={"Host": host}, timeout=30, **kw)  # type: ignore[arg-type]


@pytest.fixture
def server(make_server) -> RunningServer:  # noqa: ANN001
    def configure(cfg: Config) -> None:
        cfg.server.hostname = "mail.example.test"
        cfg.mta_sts.mode = "enforce"
        cfg.mta_sts.max_age = 86400
        cfg.mta_sts.mx = "mail.example.test, *.backup.example.test"
        cfg.ports.pop3 = 0  # off: not offered to clients
    return make_server(configure)


def test_mta_sts_policy_for_local_domain(server: RunningServer) -> None:
    r = get(server, "/.well-known/mta-sts.txt", "mta-sts.example.test")
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == "text/plain"
    assert r.content == (b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.test\r\n"
                         b"mx: *.backup.example.test\r\nmax_age: 86400\r\n")
    policy = parse_policy(r.text)
    assert policy.mode == "enforce" and policy.matches("mx1.backup.example.test")
    # another domain, or the bare host name: none
    assert get(server, "/.well-known/mta-sts.txt", "mta-sts.elsewhere.test").status_code == 404
    assert get(server, "/.well-known/mta-sts.txt", "example.test").status_code == 404


# The elements Thunderbird's parser reads (comm-central mailnews/base/content
# accountcreation readFromXML.sys.mjs), with their allowed values.
SOCKET_TYPES = {"plain", "SSL", "STARTTLS"}
AUTH = {"password-cleartext", "password-encrypted", "NTLM", "GSSAPI", "client-IP-address", "TLS-client-cert",
        "OAuth2", "none"}


def check_clientconfig(xml: bytes, cfg: Config, domain: str) -> list[tuple[str, str, int, str]]:
    """Parse like Thunderbird and return (tag, type, port, socketType) of each server."""
    root = ET.fromstring(xml)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    (provider,) = root.findall("emailProvider")
    assert provider.get("id") == domain and provider.findtext("domain") == domain
    assert provider.findtext("displayName") and provider.findtext("displayShortName")
    out = []
    for server in provider:
        if server.tag not in ("incomingServer", "outgoingServer"):
            continue
        assert server.get("type") in (("imap", "pop3") if server.tag == "incomingServer" else ("smtp",))
        assert server.findtext("hostname") == cfg.server.hostname
        assert server.findtext("socketType") in SOCKET_TYPES
        assert server.findtext("authentication") in AUTH
        assert server.findtext("username") == "%EMAILADDRESS%"
        out.append((server.tag, server.get("type"), int(server.findtext("port")), server.findtext("socketType")))
    return out


def test_thunderbird_autoconfig_matches_the_running_config(server: RunningServer) -> None:
    ports = server.config.ports
    want = [("incomingServer", "imap", ports.imaps, "SSL"), ("incomingServer", "imap", ports.imap, "STARTTLS"),
            ("incomingServer", "pop3", ports.pop3s, "SSL"),
            ("outgoingServer", "smtp", ports.smtps, "SSL"), ("outgoingServer", "smtp", ports.submission, "STARTTLS")]
    r = get(server, "/.well-known/autoconfig/mail/config-v1.1.xml", "example.test",
            params={"emailaddress": ALICE})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    assert check_clientconfig(r.content, server.config, "example.test") == want
    r2 = get(server, "/mail/config-v1.1.xml", "autoconfig.example.test")
    assert r2.status_code == 200 and r2.content == r.content
    assert get(server, "/mail/config-v1.1.xml", "autoconfig.elsewhere.test").status_code == 404
    assert get(server, "/mail/config-v1.1.xml", "x", params={"emailaddress": "a@elsewhere.test"}).status_code == 404


AD_REQUEST = (b'<?xml version="1.0" encoding="utf-8"?>\n'
              b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
              b"<Request><EMailAddress>alice@example.test</EMailAddress>"
              b"<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/"
              b"responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>")
NS = {"a": "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006",
      "o": "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"}


def test_autodiscover_pox(server: RunningServer) -> None:
    url = f"http://127.0.0.1:{server.port('http')}/autodiscover/autodiscover.xml"
    r = httpx.post(url, content=AD_REQUEST, headers={"Host": "autodiscover.example.test",
                                                     "Content-Type": "text/xml"}, timeout=30)
    assert r.status_code == 200, r.text
    root = ET.fromstring(r.content)
    assert root.tag == f"{{{NS['a']}}}Autodiscover"
    account = root.find("o:Response/o:Account", NS)
    assert account.findtext("o:AccountType", namespaces=NS) == "email"
    assert account.findtext("o:Action", namespaces=NS) == "settings"
    protos = {p.findtext("o:Type", namespaces=NS): p for p in account.findall("o:Protocol", NS)}
    assert set(protos) == {"IMAP", "POP3", "SMTP"}
    ports = server.config.ports
    for kind, port in (("IMAP", ports.imaps), ("POP3", ports.pop3s), ("SMTP", ports.smtps)):
        p = protos[kind]
        assert p.findtext("o:Server", namespaces=NS) == "mail.example.test"
        assert p.findtext("o:Port", namespaces=NS) == str(port)
        assert p.findtext("o:SSL", namespaces=NS) == "on" and p.findtext("o:Encryption", namespaces=NS) == "SSL"
        assert p.findtext("o:LoginName", namespaces=NS) == ALICE
    # a DTD (entity expansion) is refused; a body over the bound is cut off
    evil = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><Autodiscover>&a;</Autodiscover>'
    assert httpx.post(url, content=evil, timeout=30).status_code == 400
    assert httpx.post(url, content=b"<a>" + b"x" * 20000 + b"</a>", timeout=30).status_code == 413
    other = AD_REQUEST.replace(b"alice@example.test", b"alice@elsewhere.test")
    assert httpx.post(url, content=other, timeout=30).status_code == 404


def test_apple_profile_for_the_logged_in_user(server: RunningServer) -> None:
    url = f"http://127.0.0.1:{server.port('http')}/mobileconfig"
    assert httpx.get(url, timeout=30).status_code in (302, 303, 401)
    client = login(server, ALICE)
    r = client.get("/mobileconfig")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-apple-aspen-config"
    assert 'filename="alice_example.test.mobileconfig"' in r.headers["content-disposition"]
    profile = plistlib.loads(r.content)
    assert profile["PayloadType"] == "Configuration"
    (mail,) = profile["PayloadContent"]
    ports = server.config.ports
    assert mail["PayloadType"] == "com.apple.mail.managed" and mail["EmailAddress"] == ALICE
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"]) == ("mail.example.test",
                                                                                          ports.imaps)
    assert (mail["OutgoingMailServerPortNumber"], mail["OutgoingMailServerUseSSL"]) == (ports.smtps, True)
    assert mail["IncomingMailServerUsername"] == ALICE and mail["EmailAccountType"] == "EmailTypeIMAP"
