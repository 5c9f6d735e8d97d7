"""Webmail under abuse, against a real ``mailyard serve`` (tests/integration/
serve_process.py) whose memory is measured: request bodies far above what a
route takes, messages that are costly to parse or sanitise, and Back links
that would leave the site. Meanwhile another client's SMTP greeting must
still arrive: the HTTP service shares the event loop with every protocol."""

from __future__ import annotations

import imaplib
import os
import re
import smtplib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from urllib.parse import unquote

import pytest

from mailyard.config import Config

from ..conftest import USERS
from .serve_process import ALICE, MB, ServeProcess

httpx = pytest.importorskip("httpx")

GREETING_TIMEOUT = 5.0  # generous: an idle server greets in milliseconds


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def start(configure: Callable[[Config], None] | None = None) -> ServeProcess:
        def conf(cfg: Config) -> None:
            if configure is not None:
                configure(cfg)

        # the webmail's port is picked (and picked again if taken meanwhile) by ServeProcess
        proc = ServeProcess(tmp_path / f"data{len(started)}", conf, pick=("http",))
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def greeting_latency(server: ServeProcess) -> float:
    """Seconds until a new SMTP connection is greeted (fails past GREETING_TIMEOUT)."""
    started = time.monotonic()
    with socket.create_connection((server.host, server.port("smtp")), timeout=GREETING_TIMEOUT) as sock:
        try:
            line = sock.recv(512)
        except TimeoutError:
            pytest.fail(f"no SMTP greeting within {GREETING_TIMEOUT} s: the event loop is blocked")
        assert line.startswith(b"220"), line
    return time.monotonic() - started


def probe_while(server: ServeProcess, busy: threading.Thread) -> list[float]:
    """Greeting latencies measured one after another until ``busy`` ends."""
    latencies = []
    while busy.is_alive() or not latencies:
        latencies.append(greeting_latency(server))
        busy.join(0.2)
    return latencies


def login(server: ServeProcess, timeout: float = 120) -> httpx.Client:
    client = httpx.Client(base_url=f"http://127.0.0.1:{server.port('http')}", follow_redirects=False,
                          timeout=timeout)
    r = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', r.text).group(1)
    r = client.post("/login", data={"username": ALICE, "password": USERS[ALICE], "login_token": token})
    assert r.status_code == 303, r.text
    return client


def csrf(client: httpx.Client) -> str:
    r = client.get("/", follow_redirects=True)
    return re.search(r'data-csrf="([^"]+)"', r.text).group(1)


# --- request bodies ------------------------------------------------------------
def _stream_until_answered(server: ServeProcess, head: bytes, chunks: Iterator[bytes]) -> tuple[bytes, int]:
    """Send ``head`` then ``chunks`` (stopping when the server closes or
    answers) and return the server's answer and how many body bytes went out."""
    sock = socket.create_connection((server.host, server.port("http")), timeout=30)
    sent = 0
    stop = threading.Event()

    def send() -> None:
        nonlocal sent
        try:
            sock.sendall(head)
            for chunk in chunks:
                if stop.is_set():
                    return
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            return  # the server closed the connection: it will not read more

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    answer = b""
    try:
        sock.settimeout(60)
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    except TimeoutError:
        pass
    finally:
        stop.set()
        sender.join(30)
        sock.close()
    return answer, sent


def _status_line(answer: bytes) -> bytes:
    return answer.split(b"\r\n", 1)[0]


def _fields(total: int) -> Iterator[bytes]:
    """An urlencoded form of many fields of just under 1 MB each (Starlette's
    per-field limit), ``total`` bytes in all."""
    field = b"f=" + b"x" * (MB - 16) + b"&"
    for _ in range(total // len(field)):
        yield field


def test_login_body_refused_by_content_length_before_it_is_read(serve: Callable[..., ServeProcess]) -> None:
    server = serve()
    base = server.rss()
    server.reset_peak()
    head = (b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 1073741824\r\n\r\n")
    answer, sent = _stream_until_answered(server, head, _fields(300 * MB))
    grown = server.peak() - base
    print(f"\n1 GB login body: answer {_status_line(answer)!r} after {sent / MB:.1f} MB sent; "
          f"server RSS {base / MB:.0f} MB, peak growth {grown / MB:.1f} MB; "
          f"SMTP greeting {greeting_latency(server) * 1000:.0f} ms")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"connection: close" in answer.lower()
    assert grown < 50 * MB
    assert server.alive()


def test_chunked_login_body_is_cut_off_at_the_bound(serve: Callable[..., ServeProcess]) -> None:
    server = serve()
    base = server.rss()
    server.reset_peak()
    head = (b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")

    def chunks() -> Iterator[bytes]:  # RFC 9112 7.1: size in hex, CRLF, data, CRLF
        for field in _fields(300 * MB):
            yield b"%x\r\n%s\r\n" % (len(field), field)

    answer, sent = _stream_until_answered(server, head, chunks())
    grown = server.peak() - base
    print(f"\nchunked login body: answer {_status_line(answer)!r} after {sent / MB:.1f} MB sent; "
          f"peak growth {grown / MB:.1f} MB")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert grown < 50 * MB
    # still serving: a normal login works
    login(server).close()


def test_compose_upload_is_bounded_by_the_message_size(serve: Callable[..., ServeProcess]) -> None:
    limit = 16 * MB
    server = serve(lambda cfg: setattr(cfg.smtp, "max_message_size", limit))
    client = login(server)
    token = csrf(client)
    form = {"csrf": token, "to": ALICE, "subject": "upload", "body": "see attached", "action": "send"}

    # above the limit, with a Content-Length: refused before the upload is read
    server.reset_peak()
    base = server.rss()
    r = client.post("/compose", data=form,
                    files={"attachment": ("big.bin", b"\0" * (limit + 2 * MB), "application/octet-stream")})
    grown = server.peak() - base
    print(f"\nupload over the limit: {r.status_code}, peak growth {grown / MB:.1f} MB")
    assert r.status_code == 413
    assert grown < 50 * MB

    # above the limit, streamed without a length: cut off at the bound
    boundary = "b0undary"

    def body() -> Iterator[bytes]:
        for name, value in form.items():
            yield (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n').encode()
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="attachment"; filename="x.bin"\r\n'
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        for _ in range(100):  # 100 MB, far above the limit
            yield b"\0" * MB
        yield f"\r\n--{boundary}--\r\n".encode()

    client = login(server)
    token = csrf(client)
    form["csrf"] = token
    server.reset_peak()
    base = server.rss()
    with _maybe_closed() as outcome:
        outcome.response = client.post("/compose", content=body(),
                                       headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    grown = server.peak() - base
    status = outcome.response.status_code if outcome.response is not None else "connection closed"
    print(f"chunked upload over the limit: {status}, peak growth {grown / MB:.1f} MB")
    assert outcome.response is None or outcome.response.status_code == 413
    assert grown < 50 * MB

    # below the limit: sent, with the attachment intact
    client = login(server)
    form["csrf"] = csrf(client)
    data = os.urandom(10 * MB)  # 13.5 MB once base64-encoded
    server.reset_peak()
    base = server.rss()
    r = client.post("/compose", data=form, files={"attachment": ("data.bin", data, "application/octet-stream")})
    grown = server.peak() - base
    print(f"10 MB upload: {r.status_code}, peak growth {grown / MB:.1f} MB; "
          f"SMTP greeting {greeting_latency(server) * 1000:.0f} ms")
    assert r.status_code == 303, re.findall(r"<li>[^<]*</li>|class=\"error[^<]*", r.text)
    assert grown < 200 * MB
    imap = imaplib.IMAP4("127.0.0.1", server.port("imap"))
    imap.login(ALICE, USERS[ALICE])
    imap.select("INBOX")
    deadline = time.monotonic() + 30
    while (n := int(imap.select("INBOX")[1][0])) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    typ, fetched = imap.fetch(str(n), "(BODY.PEEK[])")
    imap.logout()
    msg = message_from_bytes(fetched[0][1], policy=default_policy)
    [part] = list(msg.iter_attachments())
    assert part.get_filename() == "data.bin" and part.get_content() == data


class _maybe_closed:
    """A request the server may answer (413) or end by closing the connection."""

    response: httpx.Response | None = None

    def __enter__(self) -> _maybe_closed:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
        return exc_type is not None and issubclass(exc_type, httpx.TransportError)  # type: ignore[arg-type]


# --- messages costly to show ------------------------------------------------------
def _deliver(server: ServeProcess, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=300) as smtp:
        smtp.sendmail("mallory@elsewhere.test", [ALICE], raw)


def _first_message(client: httpx.Client) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = client.get("/", follow_redirects=True)
        m = re.search(r'href="(/box/\d+/msg/\d+)', r.text)
        if m:
            return m.group(1)
        time.sleep(0.2)
    pytest.fail("the message did not show up in the list")


def _open_while_probing(server: ServeProcess, url: str) -> tuple[list, list[float]]:
    client = login(server, timeout=600)
    pages: list = []

    def open_message() -> None:
        for path in (url, url + "/body"):
            pages.append(client.get(path))

    opener = threading.Thread(target=open_message, daemon=True)
    server.reset_peak()
    opener.start()
    latencies = probe_while(server, opener)
    opener.join()
    return pages, latencies


def _header(subject: str, ctype: str) -> bytes:
    return (f"From: Mallory <mallory@elsewhere.test>\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
            f"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@elsewhere.test>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: {ctype}\r\n\r\n").encode()


def test_deeply_nested_html_does_not_freeze_the_server(serve: Callable[..., ServeProcess]) -> None:
    server = serve()
    depth = 100_000  # about 1 MB; the sanitiser's time grows with the square of the depth
    body = ("<div>" * depth + "deep" + "</div>" * depth).encode()
    lines = b"\r\n".join(body[i:i + 900] for i in range(0, len(body), 900))
    _deliver(server, _header("deep html", "text/html; charset=utf-8") + lines + b"\r\n")
    base = server.rss()
    client = login(server)
    url = _first_message(client)
    pages, latencies = _open_while_probing(server, url)
    grown = server.peak() - base
    print(f"\n{depth} nested divs: page {pages[0].status_code} body {pages[1].status_code}; "
          f"SMTP greeting latency max {max(latencies) * 1000:.0f} ms over {len(latencies)} probes; "
          f"server RSS peak growth {grown / MB:.1f} MB")
    assert pages[0].status_code == 200 and "too complex" in pages[0].text.lower()
    assert 'id="download"' in pages[0].text
    assert pages[1].status_code == 200 and "too complex" in pages[1].text.lower()
    assert grown < 100 * MB
    assert server.alive()


def test_million_part_message_does_not_freeze_the_server(serve: Callable[..., ServeProcess]) -> None:
    server = serve()
    parts = 1_000_000
    raw = (_header("many parts", 'multipart/mixed; boundary="b"')
           + b"--b\r\n\r\nx\r\n" * parts + b"--b--\r\n")
    delivering = threading.Thread(target=_deliver, args=(server, raw), daemon=True)
    delivering.start()
    during_delivery = probe_while(server, delivering)
    print(f"\n{parts} parts, {len(raw) / MB:.1f} MB: SMTP greeting latency during delivery "
          f"max {max(during_delivery) * 1000:.0f} ms over {len(during_delivery)} probes")
    base = server.rss()
    client = login(server)
    url = _first_message(client)
    pages, latencies = _open_while_probing(server, url)
    grown = server.peak() - base
    print(f"opened: page {pages[0].status_code} body {pages[1].status_code}; SMTP greeting latency "
          f"max {max(latencies) * 1000:.0f} ms over {len(latencies)} probes; "
          f"server RSS {base / MB:.0f} MB, peak growth {grown / MB:.1f} MB")
    assert pages[0].status_code == 200 and "too complex" in pages[0].text.lower()
    assert pages[1].status_code == 200 and "too complex" in pages[1].text.lower()
    # the store's background indexer may derive the new message meanwhile
    # (capped at 10,000 parts: about 30 MB); parsing it for display would take 700 MB
    assert grown < 150 * MB
    # an ordinary message is still shown
    _deliver(server, _header("normal", "text/html; charset=utf-8") + b"<p>hello <b>there</b></p>\r\n")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        links = re.findall(r'href="(/box/\d+/msg/\d+)', client.get("/", follow_redirects=True).text)
        if len(set(links)) >= 2:
            break
        time.sleep(0.2)
    newest = links[0]
    assert "<b>there</b>" in client.get(newest + "/body").text


# --- Back links ------------------------------------------------------------------
OPEN_REDIRECTS = [
    "/%09/evil.example/", "/%0a/evil.example/", "/%0d/evil.example/", "/\\evil.example/",
    "/%5cevil.example/", "//evil.example/", "/%2F%2Fevil.example", "/%2f/evil.example", "///evil.example",
    "https:evil.example", "https://evil.example/", "javascript:alert(1)", "%09javascript:alert(1)",
    "/%09%09/evil.example", "/box/1/../../%09/evil.example", "/box/1/%09/evil.example",
    "/box/1?x=%0a//evil.example", " /evil.example", "/\t/evil.example", "/box/1\\..\\evil.example",
]


def test_back_link_never_leaves_the_site(serve: Callable[..., ServeProcess]) -> None:
    server = serve()
    _deliver(server, _header("back", "text/plain") + b"hello\r\n")
    client = login(server)
    url = _first_message(client)
    box = url.split("/msg/")[0]
    fine = client.get(url, params={"back": f"{box}?sort=from&dir=asc"})
    assert f'href="{box}?sort=from&amp;dir=asc" id="back"' in fine.text
    for vector in OPEN_REDIRECTS:
        r = client.get(url, params={"back": unquote(vector)})
        href = re.search(r'href="([^"]*)" id="back"', r.text).group(1)
        assert href == box, (vector, href)
