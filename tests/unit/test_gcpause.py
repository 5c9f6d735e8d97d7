"""gcpause.gc_paused: one pause of the garbage collector for the process,
however many threads pause it at once and in whatever order they end."""

from __future__ import annotations

import gc
import random
import threading

from mailyard.gcpause import gc_paused


def test_overlapping_pauses_leave_the_collector_on() -> None:
    """Threads whose pauses overlap in every order: the collector is off
    while any pause runs and on once all have ended."""
    assert gc.isenabled()
    rng = random.Random(3)
    start = threading.Barrier(8)
    off_inside: list[bool] = []

    def pauser() -> None:
        start.wait()
        for _ in range(300):
            with gc_paused():
                off_inside.append(not gc.isenabled())
                if rng.random() < 0.3:
                    threading.Event().wait(0.0001)

    threads = [threading.Thread(target=pauser) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(off_inside) and len(off_inside) == 8 * 300
    assert gc.isenabled()


def test_ending_out_of_order_and_a_collector_off_before() -> None:
    first, second = gc_paused(), gc_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first one out is not the last
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()
    gc.disable()  # off before: stays off
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
