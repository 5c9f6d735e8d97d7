"""Sets of client addresses from the configuration (``[http]
trusted_proxies``, ``[server] proxy_protocol_from``): addresses or networks."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressSet:
    """Membership of an address in a list of addresses and networks.

    An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``, as a dual-stack
    socket reports IPv4 peers) matches its IPv4 form.
    """

    def __init__(self, items: Iterable[str]) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(i, strict=False) for i in items)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, address: object) -> bool:
        if not self.networks or not isinstance(address, str):
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)
