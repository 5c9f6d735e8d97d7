"""Connection caps (net/conncaps.py): the one count of open connections per
listener and per client address, for the mail ports and the HTTP port."""

from __future__ import annotations

from mailyard.net.conncaps import ConnectionCaps


def test_total_and_per_address_caps() -> None:
    caps = ConnectionCaps(max_connections=3, max_per_ip=2)
    a, b, c, d = object(), object(), object(), object()
    assert caps.admit(a, "192.0.2.1") is None
    assert caps.admit(b, "192.0.2.1") is None
    assert caps.admit(c, "192.0.2.1") == "too many connections from your address"
    assert caps.admit(c, "192.0.2.2") is None
    assert caps.admit(d, "192.0.2.3") == "too many connections"
    assert caps.active == 3
    caps.release(a)
    caps.release(a)  # a second release does nothing
    caps.release(d)  # nor does one for a refused connection
    assert caps.active == 2
    assert caps.admit(d, "192.0.2.1") is None
    assert set(caps.connections()) == {b, c, d}


def test_a_connection_admitted_again_is_counted_once() -> None:
    """A TLS connection is admitted at accept (net/accept.py) and again by
    its session once the handshake is done: one slot, even at the cap."""
    caps = ConnectionCaps(max_connections=2, max_per_ip=1)
    a, b = object(), object()
    assert caps.admit(a, "192.0.2.1") is None
    assert caps.admit(a, "192.0.2.1") is None  # the handshake is done: still its slot
    assert caps.active == 1
    assert caps.refusal("192.0.2.1") == "too many connections from your address"
    assert caps.admit(b, "192.0.2.2") is None
    caps.release(a)
    assert caps.active == 1
    assert caps.admit(object(), "192.0.2.1") is None


def test_withdraw_gives_back_only_a_slot_no_session_claimed() -> None:
    """The accept loop withdraws what it counted in at accept when the
    handshake ends without it; once the session admitted itself (a second
    admission) the slot is the session's, released at its end only."""
    caps = ConnectionCaps(max_connections=10, max_per_ip=10)
    unclaimed, claimed = object(), object()
    assert caps.admit(unclaimed, "192.0.2.1") is None
    assert caps.admit(claimed, "192.0.2.1") is None
    assert caps.admit(claimed, "192.0.2.1") is None  # its session's connection_made
    caps.withdraw(unclaimed)
    caps.withdraw(claimed)  # (a stop cancelled the accept task after the greeting)
    assert caps.connections() == [claimed]
    caps.release(claimed)  # the session's connection_lost
    assert caps.active == 0
    caps.withdraw(claimed)  # and nothing more afterwards
    assert caps.admit(claimed, "192.0.2.1") is None  # a fresh admission is unclaimed again
    caps.withdraw(claimed)
    assert caps.active == 0
