"""One send per form (web/sendonce.py): the first POST of a form sends,
another gets what came of it."""

from __future__ import annotations

import asyncio

import pytest

from mailyard.web import sendonce
from mailyard.web.sendonce import Earlier, SendOnce


async def _turns(n: int = 20) -> None:
    """Let the other tasks run (loop turns, not time)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_second_post_waits_for_the_first_and_gets_where_it_led() -> None:
    sends = SendOnce()
    assert await sends.claim(1, "form-a") is None
    second = asyncio.ensure_future(sends.claim(1, "form-a"))
    await _turns()
    assert not second.done()  # the first is under way
    sends.went(1, "form-a", "/compose/pending/T")
    assert await second == Earlier("/compose/pending/T")
    assert await sends.claim(1, "form-a") == Earlier("/compose/pending/T")  # a reload, later
    assert await sends.claim(2, "form-a") is None  # another account's form
    assert await sends.claim(1, "") is None and await sends.claim(1, "") is None  # no id: sends as before
    assert await sends.claim(1, "not an id!") is None


async def test_a_refused_first_post_lets_the_waiting_one_send() -> None:
    sends = SendOnce()
    assert await sends.claim(1, "f") is None
    waiting = [asyncio.ensure_future(sends.claim(1, "f")) for _ in range(2)]
    await _turns()
    sends.give_back(1, "f")  # refused: nothing went
    # one of the two sends now; the other waits for that one
    done, pending = await asyncio.wait(waiting, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    await _turns()
    assert len(done) == 1 and len(pending) == 1 and not next(iter(pending)).done()
    (sending,) = done
    assert sending.result() is None
    sends.went(1, "f", "/box/1")
    assert await asyncio.gather(*waiting) in ([None, Earlier("/box/1")], [Earlier("/box/1"), None])


async def test_undo_after_the_send_lets_the_form_send_again_and_leaves_no_waiter_sending() -> None:
    sends = SendOnce()
    assert await sends.claim(1, "f") is None
    sends.went(1, "f", "/compose/pending/T")
    sends.give_back(1, "f")  # the held send was undone
    assert await sends.claim(1, "f") is None


async def test_a_post_that_ended_without_a_place_answers_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sendonce, "WAIT_FOR_FIRST", 0.05)
    sends = SendOnce()
    assert await sends.claim(1, "f") is None
    assert await sends.claim(1, "f") == Earlier(None)  # still under way after the wait
    sends.went(1, "f")
    sends.went(1, "f", "/later")  # the first end wins
    assert await sends.claim(1, "f") == Earlier(None)


async def test_sends_under_way_are_never_forgotten_for_room(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sendonce, "MAX_KEPT", 2)
    sends = SendOnce()
    for form in ("a", "b", "c"):
        assert await sends.claim(1, form) is None
    sends.went(1, "c", "/c")
    assert await sends.claim(1, "d") is None  # room made by forgetting the ended "c", not "a" or "b"
    sends.went(1, "a", "/a")
    assert await sends.claim(1, "a") == Earlier("/a")
