"""Webmail page loads at 100,000 messages: the Inbox page (conversations
and flat), a 20-message conversation, and searches with operators.

The INBOX is the corpus of bench/sort.py (small messages, 2,000 senders, two
thirds replying to an earlier one, so the conversation list has real
threads), plus one conversation of 20 messages (References chains) and some
messages with an attachment, filled through the store API before the server
starts and derived first (bench/imap.py ``_fill``), as after normal delivery.

Figures are medians of several requests after a warm-up (the first request
of a folder builds its list and threads; that cold figure is reported too),
timed by an HTTP client on the same host: the server's time plus a loopback
round trip.
"""

from __future__ import annotations

import re
import statistics
import time

from .common import USERS, BenchServer, Result, progress
from .imap import ALICE, _fill
from .sort import corpus

MESSAGES = 100_000
RUNS = 7
CONV = 20
SEARCHES = {
    "search: bare words": "budget meeting",
    "search: from: + is:unread": "from:sender12 is:unread",
    "search: subject: -word after: larger:": "subject:lunch -party after:2020-01-01 larger:100",
    "search: quoted phrase + has:attachment": '"quarterly numbers" has:attachment',
    "search: in:all -from:": "review in:all -from:sender7",
}


def extra() -> list[bytes]:
    """A 20-message thread and 50 messages with an attachment."""
    out = []
    for i in range(CONV):
        refs = " ".join(f"<conv{j}.bench@remote.test>" for j in range(i))
        out.append((f"From: Sender {i % 3} <sender{i % 3}@remote.test>\r\nTo: {ALICE}\r\n"
                    f"Subject: {'Re: ' if i else ''}The long thread\r\nMessage-ID: <conv{i}.bench@remote.test>\r\n"
                    + (f"References: {refs}\r\nIn-Reply-To: <conv{i - 1}.bench@remote.test>\r\n" if i else "")
                    + f"Date: {i + 1} Dec 2026 10:00:00 +0000\r\n\r\nturn {i} of the long thread\r\n").encode())
    for i in range(50):
        out.append((f"From: Sender {i} <sender{i}@remote.test>\r\nTo: {ALICE}\r\nSubject: numbers {i}\r\n"
                    f"Message-ID: <att{i}.bench@remote.test>\r\nMIME-Version: 1.0\r\n"
                    'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
                    "the quarterly numbers are attached\r\n--b\r\nContent-Type: application/pdf; name=q.pdf\r\n"
                    "Content-Disposition: attachment; filename=q.pdf\r\n\r\n%PDF-1.4\r\n--b--\r\n").encode())
    return out


def _client(port: int):  # noqa: ANN202
    import httpx

    c = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300, follow_redirects=False)
    token = re.search(r'name="login_token" value="([^"]+)"', c.get("/login").text).group(1)  # type: ignore[union-attr]
    r = c.post("/login", data={"username": ALICE, "password": USERS[ALICE], "login_token": token})
    assert r.status_code == 303, r.text
    return c


def _timed(c, url: str, params: dict | None = None) -> tuple[float, str]:  # noqa: ANN001
    start = time.perf_counter()
    r = c.get(url, params=params)
    elapsed = time.perf_counter() - start
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    return elapsed, r.text


def run(quick: bool = False) -> list[Result]:
    count = 10_000 if quick else MESSAGES
    server = BenchServer(("http",), fsync=False)
    figures: dict[str, tuple[float, list[float]]] = {}
    cold: dict[str, float] = {}
    try:
        server.setup()
        progress(f"filling INBOX with {count:,} messages (threads, a {CONV}-message conversation)")
        msgs = corpus(count - CONV - 50) + extra()
        _fill(server, msgs)
        server.start()
        c = _client(server.ports["http"])
        inbox = int(re.search(r"/box/(\d+)", c.get("/").headers["location"]).group(1))  # type: ignore[union-attr]

        def measure(name: str, url: str, params: dict | None = None) -> str:
            first, text = _timed(c, url, params)
            cold[name] = first
            times = [_timed(c, url, params)[0] for _ in range(RUNS)]
            figures[name] = (statistics.median(times), times)
            return text

        page = measure("inbox page (conversations)", f"/box/{inbox}")
        measure("inbox page 2 (conversations)", f"/box/{inbox}", {"start": "50"})
        link = re.search(r'href="(/box/\d+/conv/\d+)" class="open">Re: The long thread<', page)
        if link is None:  # not on the first page: find it by search
            found = c.get(f"/box/{inbox}", params={"q": '"turn 19 of the long thread"'}).text
            uid = re.search(r'/msg/(\d+)"', found).group(1)  # type: ignore[union-attr]
            conv_url = f"/box/{inbox}/conv/{uid}"
        else:
            conv_url = link.group(1)
        text = measure(f"open a {CONV}-message conversation", conv_url)
        assert text.count('class="convmsg') == CONV, text.count('class="convmsg')
        for name, q in SEARCHES.items():
            measure(name, f"/box/{inbox}", {"q": q})
        c.post("/logout", data={"csrf": re.search(r'data-csrf="([^"]+)"', page).group(1)})  # type: ignore[union-attr]
    finally:
        server.stop()
    progress(", ".join(f"{n} {v[0] * 1000:.0f} ms (cold {cold[n] * 1000:.0f} ms)" for n, v in figures.items()))
    return [Result("web", f"{name} at {count:,}", v[0], "s", "target under 0.2 s server time",
                   {"messages": count, "runs": RUNS, "all": v[1], "cold": cold[name]})
            for name, v in figures.items()]
