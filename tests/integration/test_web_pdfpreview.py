"""PDF attachments previewed as images of their first pages (web/pdfpreview.py),
over HTTP against a running server: the frame page and its PNGs, the access
checks, the cache, a malformed PDF, more pages than are shown, the server
without poppler-utils, and a PDF that is slow to draw hitting the bounds while
another user is served; and in a ``mailyard serve`` process, the server's
memory and its SMTP greeting while decompression bombs are drawn."""

from __future__ import annotations

import re
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailyard.message.compose import Attachment, compose, to_bytes
from mailyard.web import pdfpreview

from ..conftest import RunningServer, require_program
from ..pdfsamples import image_bomb, slow_pdf, text_pdf
from ..waiting import wait_until
from . import test_web_abuse as abuse
from .serve_process import MB, ServeProcess, children
from .test_web_abuse import serve  # noqa: F401 (fixture)
from .test_web_http import ALICE, BOB, append, box_id, login

httpx = pytest.importorskip("httpx")


@pytest.fixture(autouse=True)
def poppler() -> None:
    require_program("pdftoppm", "poppler-utils")
    require_program("pdfinfo", "poppler-utils")


def with_pdf(server: RunningServer, data: bytes, name: str = "report.pdf", user: str = ALICE) -> str:
    """Appends a message carrying ``data`` as a PDF attachment (part 2); its URL."""
    raw = to_bytes(compose("Carol <carol@example.test>", user, subject="a pdf", text="see the file",
                           attachments=[Attachment(name, data, "application/pdf")]))
    uid = append(server, user, raw)
    return f"/box/{box_id(server, user, 'INBOX')}/msg/{uid}"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, the first after the signature."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def count_renders(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = pdfpreview.render_pdf

    async def counted(data: bytes) -> pdfpreview.Pages:
        calls.append(len(data))
        return await real(data)

    monkeypatch.setattr(pdfpreview, "render_pdf", counted)
    return calls


def test_pdf_pages_shown_as_png_in_a_sandboxed_frame(mailserver: RunningServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    renders = count_renders(monkeypatch)
    base = with_pdf(mailserver, text_pdf(["Page one", "Page two"]))
    c = login(mailserver)
    page = c.get(base).text
    assert (f'<iframe class="pdf" src="{base}/part/2/preview" title="report.pdf" '
            'sandbox="allow-same-origin" loading="lazy"></iframe>') in page
    assert f'<a href="{base}/part/2" download class="pdf-download">download</a>' in page
    r = c.get(f"{base}/part/2/preview")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == (
        "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'self'; sandbox allow-same-origin")
    assert r.headers["x-frame-options"] == "SAMEORIGIN"
    assert "<script" not in r.text and "First " not in r.text
    assert re.findall(r'<img src="([^"]+)" alt="Page (\d) of 2"', r.text) == [
        (f"{base}/part/2/page/1", "1"), (f"{base}/part/2/page/2", "2")]
    assert "<figcaption>page 1 of 2</figcaption>" in r.text
    for n in (1, 2):
        img = c.get(f"{base}/part/2/page/{n}")
        assert img.status_code == 200
        assert img.headers["content-type"] == "image/png"
        assert img.headers["x-content-type-options"] == "nosniff"
        # an A4 page (595 x 842 pt) scaled to 1200 pixels on its longer side
        assert png_size(img.content) == (848, 1200)
        assert 1000 < len(img.content) < 500_000
    assert c.get(f"{base}/part/2/page/3").status_code == 404
    assert c.get(f"{base}/part/2/page/0").status_code == 404
    # the page and its images came from one render; reloading renders nothing
    assert c.get(f"{base}/part/2/preview").status_code == 200
    assert len(renders) == 1
    # the text part is no PDF: no preview of it
    assert c.get(f"{base}/part/1/preview").status_code == 404


def test_another_account_cannot_fetch_the_preview(mailserver: RunningServer) -> None:
    base = with_pdf(mailserver, text_pdf(["Secret page"]))
    alice = login(mailserver)
    assert alice.get(f"{base}/part/2/page/1").status_code == 200  # rendered and cached
    bob = login(mailserver, BOB)
    for path in ("preview", "page/1"):
        r = bob.get(f"{base}/part/2/{path}")
        assert r.status_code == 404 and "image/png" not in r.headers["content-type"]
    # Bob's own folder id with Alice's UID: his folder has no such message
    bob_base = re.sub(r"/box/\d+/", f"/box/{box_id(mailserver, BOB, 'INBOX')}/", base)
    assert bob.get(f"{bob_base}/part/2/page/1").status_code == 404
    # without a session: no preview either
    anon = httpx.Client(base_url=f"http://127.0.0.1:{mailserver.port('http')}")
    assert anon.get(f"{base}/part/2/page/1").status_code in (401, 303)


def test_malformed_pdf_says_preview_not_available(mailserver: RunningServer) -> None:
    base = with_pdf(mailserver, b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >> endobj\n%%EOF\n")
    c = login(mailserver)
    r = c.get(f"{base}/part/2/preview")
    assert r.status_code == 200
    assert '<p class="unavailable">Preview not available: the file could not be read as a PDF.</p>' in r.text
    assert "<img" not in r.text
    assert c.get(f"{base}/part/2/page/1").status_code == 404
    # the server goes on: a good PDF right after is drawn
    good = with_pdf(mailserver, text_pdf(["fine"]))
    assert c.get(f"{good}/part/2/page/1").headers["content-type"] == "image/png"


def test_only_the_first_five_pages_are_drawn(mailserver: RunningServer) -> None:
    base = with_pdf(mailserver, text_pdf([f"Page {n}" for n in range(1, 8)]))
    c = login(mailserver)
    text = c.get(f"{base}/part/2/preview").text
    assert '<p class="shown">First 5 of 7 pages shown.</p>' in text
    assert len(re.findall(r"<img ", text)) == 5
    assert "<figcaption>page 1 of 7 (first 5 shown)</figcaption>" in text
    assert c.get(f"{base}/part/2/page/5").status_code == 200
    assert c.get(f"{base}/part/2/page/6").status_code == 404


@pytest.mark.parametrize("title", [b"Pages:          1", b"Pages: " + b"9" * 5000])
def test_the_page_count_is_not_taken_from_the_title(mailserver: RunningServer, title: bytes) -> None:
    """pdfinfo prints the document's Title (the sender's text, newlines
    included) before its own "Pages:" line: a Title holding a line of that
    form does not set the page count (nor break the preview with a number
    too long for int())."""
    info = b"<< /Title (Report\\n" + title + b") >>"
    base = with_pdf(mailserver, text_pdf([f"Page {n}" for n in range(1, 4)], info=info))
    c = login(mailserver)
    r = c.get(f"{base}/part/2/preview")
    assert r.status_code == 200
    assert len(re.findall(r"<img ", r.text)) == 3 and "<figcaption>page 3 of 3</figcaption>" in r.text


def test_without_poppler_the_page_says_which_package(mailserver: RunningServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    base = with_pdf(mailserver, text_pdf(["x"]))
    monkeypatch.setattr(pdfpreview, "programs", lambda: None)
    c = login(mailserver)
    page = c.get(base).text
    assert "<iframe" not in page.split('class="previews"')[1]
    assert ('<p class="pdf-unavailable">No preview: the server cannot draw PDF pages '
            "(its administrator can install the poppler-utils package).</p>") in page
    assert f'<a href="{base}/part/2?inline=1" target="_blank" rel="noopener">report.pdf</a>' in page
    assert "install the poppler-utils package" in c.get(f"{base}/part/2/preview").text


def test_rate_bound_per_account(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pdfpreview, "RATE_RENDERS", 3)
    p = pdfpreview.Previewer()
    assert [p._rate_ok(1) for _ in range(4)] == [True, True, True, False]
    assert p._rate_ok(2)  # another account has its own


def test_slow_pdf_hits_the_bounds_and_others_are_served(mailserver: RunningServer, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A 14 KB PDF that would take minutes of CPU to draw is stopped at the
    wall-clock bound (shortened here to 3 s) and its temporary files removed;
    meanwhile another user's pages are answered."""
    monkeypatch.setattr(pdfpreview, "RENDER_TIMEOUT", 3.0)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    bomb = slow_pdf()
    assert len(bomb) < 20_000
    base = with_pdf(mailserver, bomb, "bomb.pdf")
    bob_msg = with_pdf(mailserver, text_pdf(["Bob's page"]), user=BOB)
    alice, bob = login(mailserver), login(mailserver, BOB)
    result: dict[str, httpx.Response] = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", alice.get(f"{base}/part/2/preview")))
    thread.start()
    wait_until(lambda: any(tmp_path.glob("mailyard-pdf-*")), what="the render of the slow PDF to start")
    started = time.monotonic()
    r = bob.get(bob_msg)  # the read page of another user, while the render runs
    latency = time.monotonic() - started
    assert r.status_code == 200 and "a pdf" in r.text
    # another user's own PDF is drawn meanwhile (one render per account at a time)
    assert bob.get(f"{bob_msg}/part/2/page/1", timeout=30).headers["content-type"] == "image/png"
    thread.join(timeout=60)
    assert not thread.is_alive()
    r = result["r"]
    assert r.status_code == 200
    assert ('<p class="unavailable">Preview not available: it takes too long or too much memory '
            "to draw.</p>") in r.text
    assert not list(tmp_path.glob("mailyard-pdf-*"))
    print(f"\nslow PDF: another user's read page answered in {latency:.2f} s during the render")
    assert latency < 10
    # the verdict is cached: asking again does not draw it again
    renders = count_renders(monkeypatch)
    assert "too long" in alice.get(f"{base}/part/2/preview").text
    assert renders == []


def _comm(pid: int) -> str:
    """The program name of a process ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _vm_peak(pid: int) -> int:
    """VmHWM (peak RSS, bytes) of a live process; 0 once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) * 1024 if found else 0


@pytest.mark.parametrize("bomb", ["fills", "image"])
def test_pdf_bombs_in_a_serve_process(serve: Callable[..., ServeProcess], bomb: str) -> None:  # noqa: F811
    """``fills``: 14 KB inflating to 200 000 page-sized fills; ``image``: 1.2 MB
    inflating to a 20 000 x 20 000 image (1.2 GB of pixels). Each ends within
    the bounds: stopped at the 10 s bound, or (poppler scales an image as it
    streams it, so a fast machine may finish the image in time) drawn no
    larger than SCALE_TO; the server's own memory hardly grows (the drawing
    is in pdftoppm, whose memory is bounded by RLIMIT_AS) and it greets new
    SMTP connections meanwhile."""
    server = serve()
    data = slow_pdf() if bomb == "fills" else image_bomb()
    raw = to_bytes(compose("Mallory <mallory@elsewhere.test>", ALICE, subject="bomb", text="open me",
                           attachments=[Attachment("bomb.pdf", data, "application/pdf")]))
    abuse._deliver(server, raw)
    client = abuse.login(server)
    url = abuse._first_message(client)
    assert f"{url}/part/2/preview" in client.get(url).text
    base = server.rss()
    server.reset_peak()
    pages: list[httpx.Response] = []
    opener = threading.Thread(target=lambda: pages.append(client.get(f"{url}/part/2/preview")), daemon=True)
    child_peak = 0
    drawn = False

    def watch() -> None:
        nonlocal child_peak, drawn
        while opener.is_alive():
            for pid in children(server.proc.pid):
                if _comm(pid) == "pdftoppm":
                    drawn = True
                    child_peak = max(child_peak, _vm_peak(pid))
            opener.join(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    opener.start()
    watcher.start()
    latencies = abuse.probe_while(server, opener)
    opener.join(120)
    watcher.join(10)
    grown = server.peak() - base
    print(f"\n{bomb} PDF ({len(data) // 1024} KB): SMTP greeting latency max {max(latencies) * 1000:.0f} ms "
          f"over {len(latencies)} probes; server RSS peak growth {grown / MB:.1f} MB; "
          f"pdftoppm peak RSS {child_peak / MB:.1f} MB")
    assert pages and pages[0].status_code == 200
    if "Preview not available" in pages[0].text:
        assert "Preview not available: it takes too long or too much memory to draw." in pages[0].text
    else:
        image = client.get(f"{url}/part/2/page/1")
        assert image.status_code == 200 and max(png_size(image.content)) <= pdfpreview.SCALE_TO
    assert drawn
    assert child_peak <= pdfpreview.ADDRESS_SPACE
    assert grown < 100 * MB
    assert not [pid for pid in children(server.proc.pid) if _comm(pid) in ("pdftoppm", "pdfinfo")]
    assert abuse.greeting_latency(server) < 10
    assert server.alive()


def test_renders_waiting_for_one_account_are_bounded(mailserver: RunningServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Each render that waits for its account's turn holds the whole PDF
    (up to MAX_PDF_BYTES); one user asking for many different previews at
    once must not pile them up in the server's memory: beyond
    PENDING_PER_ACCOUNT renders under way or waiting, a preview is refused
    at once ("try again") instead of queued, and not cached as such."""
    release = threading.Event()
    started: list[int] = []

    async def held(data: bytes) -> pdfpreview.Pages:
        import asyncio

        started.append(len(data))
        while not release.is_set():
            await asyncio.sleep(0.02)
        return pdfpreview.Pages(reason="stub")

    monkeypatch.setattr(pdfpreview, "render_pdf", held)
    monkeypatch.setattr(pdfpreview, "available", lambda: True)
    asks = 8
    bases = [with_pdf(mailserver, text_pdf([f"page of message {n}"])) for n in range(asks)]
    alice = login(mailserver)
    answers: list[str] = []
    threads = [threading.Thread(target=lambda b=b: answers.append(alice.get(f"{b}/part/2/preview", timeout=60).text))
               for b in bases]
    try:
        for t in threads:
            t.start()
        bound = pdfpreview.PENDING_PER_ACCOUNT
        wait_until(lambda: len(answers) >= asks - bound, timeout=10,
                   what=lambda: f"refusals of the previews beyond {bound} ({len(answers)} answered)")
        busy = [a for a in answers if "try again" in a]
        print(f"\n{asks} previews asked at once: {len(busy)} refused at once, {len(started)} renders started")
        assert len(busy) == asks - bound
        assert len(started) <= bound
    finally:
        release.set()
        for t in threads:
            t.join(60)
    assert len(answers) == asks and sum("stub" in a for a in answers) == bound
    # a refusal is not cached: asked again, every preview is drawn
    assert all("stub" in alice.get(f"{b}/part/2/preview").text for b in bases)
