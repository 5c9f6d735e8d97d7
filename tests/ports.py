"""Port numbers for servers a test must configure by number before they start.

Most servers in the tests bind port 0 and report the port the kernel chose.
Some cannot: Pebble validates against fixed ports, a ``mailyard serve``
process reads its ports from its configuration, a second node must know the
first one's. A port taken from the kernel's ephemeral range (bind to 0,
close, reuse) can be handed by the kernel to any other socket before the
server binds it: another test's client connection takes it, and the server
fails with "Address already in use".

``free_port`` hands out ports below the ephemeral range instead, which the
kernel never assigns on its own. Each pytest-xdist worker draws from its own
slice, starting at a random place and never handing out a port twice, so
tests running side by side do not collide either; each port is checked to
be bindable now.
"""

from __future__ import annotations

import os
import random
import socket
import threading

# The lowest port handed out: above the well-known and most registered ports.
FLOOR = 10_000
# Fewer ports than this below the ephemeral range: the kernel's port 0 then.
MIN_SPAN = 2_000

_lock = threading.Lock()
_next: int | None = None
_span: tuple[int, int] | None = None


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _worker_span() -> tuple[int, int] | None:
    """This process's slice [low, high) of the ports below the ephemeral range."""
    top = _ephemeral_low()
    if top - FLOOR < MIN_SPAN:
        return None
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    size = (top - FLOOR) // count
    low = FLOOR + (index % count) * size
    return low, low + size


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _kernel_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_port(host: str = "127.0.0.1", *others: str) -> int:
    """A TCP port free now on ``host`` (and on each of ``others``: one port
    for servers on several loopback addresses), outside the kernel's
    ephemeral range."""
    global _next, _span
    with _lock:
        if _span is None:
            _span = _worker_span() or (0, 0)
            if _span != (0, 0):
                _next = random.randrange(*_span)
        low, high = _span
        if high == 0:
            for _ in range(200):
                port = _kernel_port(host)
                if all(_bindable(h, port) for h in others):
                    return port
            raise RuntimeError(f"no port free on all of {host}, {', '.join(others)}")
        assert _next is not None
        for _ in range(high - low):
            port = _next
            _next = low + (_next + 1 - low) % (high - low)
            if all(_bindable(h, port) for h in (host, *others)):
                return port
    raise RuntimeError(f"no free port left in {low}-{high - 1}")
