"""X-Forwarded-For of a trusted proxy (web/transport.py ``forwarded_client``)."""

from __future__ import annotations

from mailyard.net.addresses import AddressSet
from mailyard.web.transport import forwarded_client

TRUSTED = AddressSet(["127.0.0.1", "10.0.0.0/8"])


def test_rightmost_untrusted_hop_is_the_client() -> None:
    assert forwarded_client("203.0.113.9", TRUSTED) == "203.0.113.9"
    # the client wrote the first entry itself; the proxy appended what it saw
    assert forwarded_client("198.51.100.1, 203.0.113.9", TRUSTED) == "203.0.113.9"
    # a chain of trusted proxies is skipped
    assert forwarded_client("198.51.100.1, 203.0.113.9, 10.1.2.3", TRUSTED) == "203.0.113.9"
    assert forwarded_client("2001:db8::1", TRUSTED) == "2001:db8::1"


def test_only_trusted_hops_or_junk() -> None:
    assert forwarded_client("10.0.0.7, 127.0.0.1", TRUSTED) == "10.0.0.7"
    assert forwarded_client("unknown", TRUSTED) is None
    assert forwarded_client("198.51.100.1, _hidden", TRUSTED) is None
    assert forwarded_client(" , ", TRUSTED) is None
