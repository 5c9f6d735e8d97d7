"""A big folder in the webmail must not hold the event loop: sorting and
paging its listing (web/listing.py), building its view (store/view.py),
its flags index (web/searchquery.py InfoIndex) and its conversations
(web/conversations.py) run in a thread past a threshold, while every other
request (and mail session) of the worker is served.

The thresholds are lowered here for the in-process server (tests/conftest.py
runs it in this process, so the patches reach it), and one step of the work
is slowed, so work that holds the event loop holds it for a measurable time
whatever the machine. The server loop's turns are counted (LoopTicks) and a
probe request must be answered while the slowed request runs; nothing is
timed.
"""

from __future__ import annotations

import builtins
import re
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from mailyard.store import view
from mailyard.web import conversations, listing, searchquery
from tests.conftest import RunningServer
from tests.waiting import while_served

from .test_web_http import ALICE, box_id, login
from .test_web_search import set_conversations, subjects

httpx = pytest.importorskip("httpx")

MESSAGES = 30
SLOW = 1.0  # seconds the slowed step takes
T0 = 1_704_067_200


def _mail(n: int) -> bytes:
    # subjects in the reverse order of arrival, senders in neither
    return (f"From: Sender {(n * 7) % MESSAGES:02d} <s{n}@example.test>\r\nTo: {ALICE}\r\n"
            f"Subject: s{MESSAGES - n:02d}\r\nMessage-ID: <m{n}@example.test>\r\n"
            f"Date: 01 Jan 2024 10:00:00 +0000\r\n\r\nbody {n}\r\n").encode()


@pytest.fixture
def big(monkeypatch: pytest.MonkeyPatch, mailserver: RunningServer) -> RunningServer:
    """Alice's INBOX of ``MESSAGES`` messages, a big folder for the webmail:
    more than 5 messages are sorted, paged and listed off the event loop."""
    monkeypatch.setattr(listing, "SORT_INLINE", 5, raising=False)
    monkeypatch.setattr(view, "BUILD_INLINE", 5, raising=False)
    monkeypatch.setattr(searchquery, "INFO_INLINE", 5, raising=False)

    async def fill() -> None:
        account = await mailserver.store.get_account(ALICE)
        box = await mailserver.store.get_mailbox(account.id, "INBOX")
        for n in range(MESSAGES):
            await mailserver.store.append(box, _mail(n), [], internal_date=T0 + n * 60)

    mailserver.call(fill())
    return mailserver


def _slowed(started: threading.Event, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, its first call taking ``SLOW`` seconds more."""
    def slow(*args: Any, **kwargs: Any) -> Any:
        if not started.is_set():
            started.set()
            time.sleep(SLOW)
        return fn(*args, **kwargs)

    return slow


def _while_served(server: RunningServer, started: threading.Event, run: Callable[[], httpx.Response]
                  ) -> tuple[httpx.Response, int]:
    """``run()`` (a request) in a thread; once its slowed step has started,
    a probe request on another connection, which must be answered before
    ``run`` ends (tests/waiting.py ``while_served``)."""
    probe = httpx.Client(base_url=f"http://127.0.0.1:{server.port('http')}", timeout=30)
    try:
        return while_served(server, started, run, lambda: probe.get("/login").status_code == 200,
                            "the probe request waited for the big folder's")
    finally:
        probe.close()


def _next(page: str) -> int | None:
    found = re.search(r'\?after=(\d+)[^"]*" rel="next"', page)
    return int(found.group(1)) if found else None


def _where_paged(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> tuple[int, list[int]]:
    """The server loop's thread, and a list that gets the thread of each
    look-up of a page's place in a sorted listing (``?after=``, ``?before=``)."""
    import bisect

    async def loop_thread() -> int:
        return threading.get_ident()

    threads: list[int] = []

    def bisect_left(*args: Any, **kwargs: Any) -> int:
        threads.append(threading.get_ident())
        return bisect.bisect_left(*args, **kwargs)

    monkeypatch.setattr(listing, "bisect", SimpleNamespace(bisect_left=bisect_left))
    return server.call(loop_thread()), threads


def _per_page(server: RunningServer, n: int) -> None:
    async def go() -> None:
        account = await server.store.get_account(ALICE)
        await server.store.set_settings(account.id, {"per_page": n})

    server.call(go())


def test_sorting_a_big_folder_leaves_the_other_requests_served(big: RunningServer,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder page sorts every message of the folder by arrival: for a
    big one in a thread, while the event loop keeps turning and another
    request is answered; the page is the one sorted in place would give."""
    set_conversations(big, ALICE, False)
    inbox = box_id(big, ALICE, "INBOX")
    client = login(big)
    started = threading.Event()
    monkeypatch.setattr(listing, "sorted", _slowed(started, builtins.sorted), raising=False)
    response, ticks = _while_served(big, started, lambda: client.get(f"/box/{inbox}"))
    assert response.status_code == 200
    assert ticks >= 20, f"the event loop stood still while the folder was sorted ({ticks} turns)"
    # newest arrival first: the subjects count up
    assert subjects(response.text) == [f"s{n:02d}" for n in range(1, MESSAGES + 1)]


def test_building_a_big_folders_view_leaves_the_other_requests_served(big: RunningServer,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The web's list of a folder's messages with their arrival times
    (store/view.py MailboxView, read once): for a big folder made in a thread."""
    set_conversations(big, ALICE, False)
    inbox = box_id(big, ALICE, "INBOX")
    client = login(big)
    started = threading.Event()
    monkeypatch.setattr(listing, "_arrival", _slowed(started, listing._arrival))
    response, ticks = _while_served(big, started, lambda: client.get(f"/box/{inbox}"))
    assert response.status_code == 200
    assert ticks >= 20, f"the event loop stood still while the folder's view was made ({ticks} turns)"
    assert subjects(response.text) == [f"s{n:02d}" for n in range(1, MESSAGES + 1)]


def test_pages_of_a_big_folder_in_every_order(big: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A big folder is paged off the event loop, and gives the pages it
    gave in place: every message once, in order, by arrival, subject and
    sender, both ways, and back from the last page."""
    loop, paged = _where_paged(big, monkeypatch)
    set_conversations(big, ALICE, False)
    _per_page(big, 7)
    inbox = box_id(big, ALICE, "INBOX")
    client = login(big)
    by_arrival = [f"s{n:02d}" for n in range(1, MESSAGES + 1)]  # newest first
    senders = {f"s{MESSAGES - n:02d}": (n * 7) % MESSAGES for n in range(MESSAGES)}
    expected = {
        ("date", "desc"): by_arrival,
        ("date", "asc"): by_arrival[::-1],
        ("subject", "asc"): sorted(by_arrival),
        ("subject", "desc"): sorted(by_arrival, reverse=True),
        ("from", "asc"): sorted(by_arrival, key=lambda s: senders[s]),
    }
    for (sort, direction), want in expected.items():
        seen: list[str] = []
        pages: list[str] = []
        after: int | None = None
        while True:
            params: dict[str, Any] = {"sort": sort, "dir": direction}
            if after is not None:
                params["after"] = after
            page = client.get(f"/box/{inbox}", params=params).text
            pages.append(page)
            seen += subjects(page)
            after = _next(page)
            if after is None:
                break
        assert seen == want, (sort, direction)
        assert len(pages) == -(-MESSAGES // 7)
        # back one page from the last
        prev = re.search(r'\?before=(\d+)[^"]*" rel="prev"', pages[-1])
        assert prev is not None
        page = client.get(f"/box/{inbox}", params={"sort": sort, "dir": direction, "before": prev.group(1)}).text
        assert subjects(page) == want[(len(pages) - 2) * 7 : (len(pages) - 1) * 7]
    assert paged, "no page was looked up by its place"
    assert loop not in paged, "pages of the big folder were looked up on the event loop"


def test_search_hits_of_a_big_folder_are_paged_off_the_loop(big: RunningServer,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Search hits keep their order and pages in a big folder, paged off the event loop."""
    loop, paged = _where_paged(big, monkeypatch)
    set_conversations(big, ALICE, False)
    _per_page(big, 5)
    inbox = box_id(big, ALICE, "INBOX")
    client = login(big)
    page = client.get(f"/box/{inbox}", params={"q": "from:s1"}).text
    # s1, s10..s19: subjects s29, s20..s11, newest arrival first
    assert subjects(page) == ["s11", "s12", "s13", "s14", "s15"]
    after = _next(page)
    assert after is not None
    assert subjects(client.get(f"/box/{inbox}", params={"q": "from:s1", "after": after}).text) == \
        ["s16", "s17", "s18", "s19", "s20"]
    assert paged and loop not in paged, "the search hits were paged on the event loop"


def test_a_big_folder_is_sorted_a_slice_at_a_time(big: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sort in a thread still holds the event loop if it is one C call
    (list.sort keeps the GIL until it ends): a big folder's listing and its
    conversations are sorted a slice at a time, and merged."""
    monkeypatch.setattr(listing, "_SORT_SLICE", 4, raising=False)
    sizes: list[int] = []

    def counted(items: Any, **kwargs: Any) -> list[Any]:
        items = list(items)
        sizes.append(len(items))
        return builtins.sorted(items, **kwargs)

    monkeypatch.setattr(listing, "sorted", counted, raising=False)
    inbox = box_id(big, ALICE, "INBOX")
    client = login(big)
    expected = [f"s{n:02d}" for n in range(1, MESSAGES + 1)]
    for conversations_on in (False, True):
        set_conversations(big, ALICE, conversations_on)
        assert subjects(client.get(f"/box/{inbox}").text) == expected
        assert subjects(client.get(f"/box/{inbox}", params={"sort": "subject", "dir": "desc"}).text) == \
            sorted(expected, reverse=True)
    assert sizes and max(sizes) <= 4, f"sorted {max(sizes)} entries in one call"


def test_a_big_folders_conversations_leave_the_other_requests_served(big: RunningServer,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The conversation list groups every message of the folder and Sent
    (RFC 5256 REFERENCES): for a big folder in a thread, from the keys
    the store read to the threads."""
    set_conversations(big, ALICE, True)
    inbox = box_id(big, ALICE, "INBOX")
    client = login(big)
    started = threading.Event()
    monkeypatch.setattr(conversations, "ThreadMessage", _slowed(started, conversations.ThreadMessage))
    response, ticks = _while_served(big, started, lambda: client.get(f"/box/{inbox}"))
    assert response.status_code == 200
    assert ticks >= 20, f"the event loop stood still while the conversations were built ({ticks} turns)"
    # one conversation per message (distinct subjects), newest first
    assert subjects(response.text) == [f"s{n:02d}" for n in range(1, MESSAGES + 1)]


def test_a_big_folders_flags_leave_the_other_requests_served(big: RunningServer,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The conversation list reads each message's flags from the flags index
    (searchquery.InfoIndex), made once per folder: for a big one in a thread."""
    set_conversations(big, ALICE, True)
    inbox = box_id(big, ALICE, "INBOX")
    client = login(big)
    started = threading.Event()
    monkeypatch.setattr(searchquery, "_bits", _slowed(started, searchquery._bits))
    response, ticks = _while_served(big, started, lambda: client.get(f"/box/{inbox}"))
    assert response.status_code == 200
    assert ticks >= 20, f"the event loop stood still while the folder's flags were indexed ({ticks} turns)"
    assert subjects(response.text) == [f"s{n:02d}" for n in range(1, MESSAGES + 1)]


def test_a_big_folders_flag_filter_leaves_the_other_requests_served(big: RunningServer,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A search by flag, size or date (``is:unread``) of a big folder tests
    every message's row of the flags index: in a thread."""
    inbox = box_id(big, ALICE, "INBOX")
    client = login(big)
    assert client.get(f"/box/{inbox}?q=is:unread").status_code == 200  # the index is made
    started = threading.Event()
    predicate = searchquery._predicate

    def slowed_predicate(term: Any) -> Any:
        return _slowed(started, predicate(term))

    monkeypatch.setattr(searchquery, "_predicate", slowed_predicate)
    response, ticks = _while_served(big, started, lambda: client.get(f"/box/{inbox}?q=is:unread"))
    assert response.status_code == 200
    assert ticks >= 20, f"the event loop stood still while the folder was filtered ({ticks} turns)"
    assert len(subjects(response.text)) == min(MESSAGES, 50)


def test_many_flag_changes_of_a_big_folder_are_applied_off_the_loop(big: RunningServer,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Many flag changes at once ("mark all read" of a big folder, or IMAP
    STORE 1:*) reach the flags index in a thread, and its answers follow."""
    inbox = box_id(big, ALICE, "INBOX")
    client = login(big)
    assert len(subjects(client.get(f"/box/{inbox}?q=is:unread").text)) > 0

    async def mark_all_read() -> None:
        account = await big.store.get_account(ALICE)
        box = await big.store.get_mailbox(account.id, "INBOX")
        uids = [m.uid for m in await big.store.list_messages(box)]
        await big.store.store_flags(box, uids, {"\\Seen"}, "add")

    big.call(mark_all_read())
    started = threading.Event()
    monkeypatch.setattr(searchquery, "_bits", _slowed(started, searchquery._bits))
    response, ticks = _while_served(big, started, lambda: client.get(f"/box/{inbox}?q=is:unread"))
    assert response.status_code == 200
    assert ticks >= 20, f"the event loop stood still while the changes were applied ({ticks} turns)"
    assert subjects(response.text) == []
