"""The webmail's transport layer, as the outermost ASGI middleware.

In order, for each HTTP request:

1. **Reverse proxies** (``[http] trusted_proxies``): only when the
   connection comes from one of those addresses, the client address is
   taken from X-Forwarded-For (the rightmost address that is not itself a
   trusted proxy: the left part is whatever the client wrote) and the scheme
   from X-Forwarded-Proto. The login throttle, the logs and the Secure
   cookie flag then see the real client and scheme. From anyone else the
   headers are ignored, so they cannot be spoofed.
2. **ACME HTTP-01** (RFC 8555 section 8.3): ``/.well-known/acme-challenge/TOKEN``
   answers the key authorization of a pending order before anything else
   (no redirect: the CA validates over plain HTTP on port 80).
3. **HTTPS redirect**: a plain-HTTP request reaching the server directly is
   redirected to the https port when the certificate is a real one (not
   the self-signed development certificate, which browsers would refuse).
4. **HSTS** (RFC 6797): over HTTPS with a real certificate (or behind a
   trusted proxy that says the client used HTTPS) responses carry
   Strict-Transport-Security; RFC 6797 section 7.2 forbids it over plain HTTP.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Any

from ..net.addresses import AddressSet

if TYPE_CHECKING:
    from ..services import Services

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
# A Host header that may go into a redirect: a name or an address, with a port.
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$")


def forwarded_client(header: str, trusted: AddressSet) -> str | None:
    """The client address of an X-Forwarded-For value: the rightmost
    address that is not a trusted proxy (each proxy appends the address it
    saw; only the entries added by trusted proxies are believed)."""
    hops = [h.strip() for h in header.split(",") if h.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            break
    else:
        if not hops:
            return None
        hop = hops[0]
    try:
        # (an "unknown" or obfuscated hop keeps the proxy's own address)
        return str(ipaddress.ip_address(hop.split("%", 1)[0]))
    except ValueError:
        return None


class Transport:
    """See the module docstring. Pure ASGI (it must not buffer streams)."""

    def __init__(self, app: Any, services: Services) -> None:
        self.app = app
        self.services = services
        self.trusted = AddressSet(services.config.http.trusted_proxies)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        proxied = self._forwarded(scope)
        path: str = scope.get("path", "")
        answer_of = self.services.acme_http01
        if answer_of is not None and path.startswith(CHALLENGE_PREFIX):
            answer = answer_of(path[len(CHALLENGE_PREFIX):])
            if answer is None:
                await _respond(send, 404, b"text/plain", b"no such challenge\n")
            else:
                await _respond(send, 200, b"application/octet-stream", answer.encode("ascii"))
            return
        http = self.services.config.http
        tls = self.services.tls
        real_cert = tls is not None and not tls.self_signed
        if scope.get("scheme") == "http" and not proxied and real_cert and http.redirect_https:
            location = self._https_url(scope)
            if location is not None:
                # RFC 9110 15.4.9: 308 keeps the method and body of a POST
                status = 301 if scope.get("method") in ("GET", "HEAD") else 308
                await _respond(send, status, b"text/plain", b"", [(b"location", location.encode())])
                return
        if scope.get("scheme") == "https" and http.hsts_max_age and (proxied or real_cert):
            value = f"max-age={http.hsts_max_age}".encode()

            async def send_hsts(message: Any) -> None:
                if message["type"] == "http.response.start":
                    message = {**message,
                               "headers": [*message.get("headers", []), (b"strict-transport-security", value)]}
                await send(message)

            await self.app(scope, receive, send_hsts)
            return
        await self.app(scope, receive, send)

    def _forwarded(self, scope: Any) -> bool:
        """Apply X-Forwarded-For/-Proto of a trusted proxy to ``scope``; True if it was one."""
        client = scope.get("client")
        if not self.trusted or not client or client[0] not in self.trusted:
            return False
        headers = scope.get("headers") or []
        forwarded_for = b",".join(v for k, v in headers if k == b"x-forwarded-for").decode("latin-1")
        ip = forwarded_client(forwarded_for, self.trusted) if forwarded_for else None
        if ip:
            scope["client"] = (ip, 0)
        protos = [v for k, v in headers if k == b"x-forwarded-proto"]
        if protos:
            proto = protos[-1].decode("latin-1").split(",")[-1].strip().lower()
            if proto in ("http", "https"):
                scope["scheme"] = proto
        return True

    def _https_url(self, scope: Any) -> str | None:
        state = scope["app"].state.web if "app" in scope else None
        port = getattr(state, "https_port", 0)
        if not port:
            return None
        host = ""
        for k, v in scope.get("headers") or []:
            if k == b"host":
                host = v.decode("latin-1")
                break
        match = _HOST.match(host)
        name = match.group(1) if match else self.services.config.server.hostname
        authority = name if port == 443 else f"{name}:{port}"
        query = scope.get("query_string", b"").decode("latin-1")
        return f"https://{authority}{scope.get('raw_path', b'').decode('latin-1') or scope.get('path', '/')}" + (
            f"?{query}" if query else "")


async def _respond(send: Any, status: int, content_type: bytes, body: bytes,
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
