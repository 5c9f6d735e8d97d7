"""PDF attachments previewed in the read page as images of their first pages.

Why images: Chromium shows a PDF with its viewer plugin, and it refuses to
run that plugin in a sandboxed frame (``<iframe sandbox>`` with any token
set); served with a ``Content-Security-Policy: sandbox`` header instead, the
PDF is shown but the sandbox is dropped (the frame keeps the site's origin
and can reach the parent page). So the server renders the first
``MAX_PAGES`` pages to PNG with poppler's ``pdftoppm`` (Debian package
poppler-utils), and the read page shows them in a frame sandboxed without
scripts: a small HTML page of ``<img>`` elements under a strict CSP.

The PDF is treated as hostile input for a C program:

- ``pdfinfo`` (the page count) and ``pdftoppm`` run as subprocesses (no
  shell) off the event loop, with a wall-clock bound (``RENDER_TIMEOUT``,
  then killed) and resource limits set by util-linux prlimit: address space,
  CPU seconds, file size, open files, no core file. Input is a file in a
  private temporary directory (mode 0700), output goes there too, and the
  directory is removed afterwards.
- At most ``MAX_PAGES`` pages, at 96 dpi scaled to at most ``SCALE_TO``
  pixels on the longer side; attachments above ``MAX_PDF_BYTES`` are not
  previewed.
- At most ``MAX_RENDERS`` renders at once per server process, one at a time
  per account, and at most ``RATE_RENDERS`` per account per ``RATE_WINDOW``
  seconds, so one user cannot take the CPU from the others. A render waiting
  for its turn holds its PDF: at most ``PENDING_PER_ACCOUNT`` renders of one
  account and ``PENDING_AT_MOST`` in all are under way or waiting; a preview
  beyond is refused at once (not cached), so the memory they hold is bounded.
- The result (pages or the reason there are none) is cached per message
  part, keyed by account, mailbox id, UIDVALIDITY, UID and part number, so
  reloading the page or fetching its images renders nothing again; the cache
  is bounded in bytes, least recently used first out.

The frame page and its images are reached only through the session's own
mailbox (``own_mailbox``) and message, like the attachment itself.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import re
import shutil
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from .pages import current, message_info, own_mailbox, read_raw, state
from .render import part_content
from .worker import TooComplex

if TYPE_CHECKING:
    from starlette.requests import Request

log = logging.getLogger(__name__)

PACKAGE = "poppler-utils"
MAX_PAGES = 5
SCALE_TO = 1200  # pixels, the longer side of a page image
DPI = 96
MAX_PDF_BYTES = 20 * 1024 * 1024
RENDER_TIMEOUT = 10.0  # seconds of wall clock for pdfinfo and pdftoppm together
CPU_SECONDS = 10
ADDRESS_SPACE = 512 * 1024 * 1024
MAX_FILE_BYTES = 32 * 1024 * 1024  # any one file the programs write
MAX_OPEN_FILES = 64
MAX_RENDERS = 2  # renders at once in this process
# renders under way or waiting (each holds its PDF): per account, and in all
PENDING_PER_ACCOUNT = 2
PENDING_AT_MOST = 8
RATE_RENDERS = 20  # renders (cache misses) per account and window
RATE_WINDOW = 60.0
CACHE_BYTES = 48 * 1024 * 1024
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# the frame page: its images from this site only, no script of any kind, no
# form, no plugin; sandboxed (without allow-scripts, allow-same-origin only
# lets its image requests carry the session cookie)
FRAME_CSP = ("default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; base-uri 'none'; "
             "form-action 'none'; frame-ancestors 'self'; sandbox allow-same-origin")
IMAGE_CSP = "default-src 'none'; sandbox"


def programs() -> tuple[str, str] | None:
    """The paths of ``pdfinfo`` and ``pdftoppm``, or None when poppler-utils is missing."""
    info, ppm = shutil.which("pdfinfo"), shutil.which("pdftoppm")
    return (info, ppm) if info and ppm and shutil.which("prlimit") else None


def available() -> bool:
    return programs() is not None


@dataclass
class Pages:
    """A rendered preview: the document's page count and the PNGs of its
    first pages; or ``reason`` (for the user) when there is none."""

    count: int = 0
    images: list[bytes] = field(default_factory=list)
    reason: str = ""

    @property
    def size(self) -> int:
        return sum(len(i) for i in self.images) + len(self.reason) + 64


class PreviewCache:
    """Rendered previews, least recently used dropped first, at most
    ``max_bytes`` of images in all. A part's bytes never change under one
    (mailbox id, UIDVALIDITY, UID), so an entry cannot go stale."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, Pages] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple) -> Pages | None:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: tuple, pages: Pages) -> None:
        if pages.size > self.max_bytes // 2 or key in self._items:
            return
        self._items[key] = pages
        self._bytes += pages.size
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.size


def _limited(argv: list[str]) -> list[str]:
    """``argv`` under util-linux's prlimit: the bounds of a render, set by
    the exec'd program itself rather than by Python code between fork and
    exec (not safe in a process with threads)."""
    prlimit = shutil.which("prlimit") or "/usr/bin/prlimit"
    return [prlimit, f"--as={ADDRESS_SPACE}",
            # SIGXCPU at the soft limit, SIGKILL at the hard one
            f"--cpu={CPU_SECONDS}:{CPU_SECONDS + 1}",
            f"--fsize={MAX_FILE_BYTES}", f"--nofile={MAX_OPEN_FILES}", "--core=0", "--", *argv]


async def _run(argv: list[str], workdir: Path, deadline: float, name: str) -> tuple[int, str]:
    """Runs ``argv`` in ``workdir`` with the limits until ``deadline`` (loop
    time, then it is killed): its exit status (negative: killed by that
    signal) and the start of its stdout. stdout and stderr go to files in
    ``workdir``, so RLIMIT_FSIZE bounds them too."""
    loop = asyncio.get_running_loop()
    out_path, err_path = workdir / f"{name}.out", workdir / f"{name}.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *_limited(argv), stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=err, cwd=workdir,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(workdir)},
            close_fds=True,
        )
    try:
        await asyncio.wait_for(proc.wait(), max(0.1, deadline - loop.time()))
    except TimeoutError:
        pass
    finally:
        if proc.returncode is None:  # past the deadline, or the request was cancelled
            proc.kill()
            await proc.wait()
    with open(out_path, "rb") as f:
        text = f.read(64 * 1024).decode("latin-1")
    status = proc.returncode if proc.returncode is not None else -9
    if status != 0:
        with open(err_path, "rb") as f:
            log.info("web: %s exited %s: %s", argv[0], status, f.read(300).decode("latin-1").strip())
    return status, text


def _reason(status: int, timed_out: bool) -> str:
    if timed_out or status < 0:
        return "it takes too long or too much memory to draw"
    return "the file could not be read as a PDF"


async def render_pdf(data: bytes) -> Pages:
    """The page count and the PNGs of the first ``MAX_PAGES`` pages of
    ``data``, or the reason they cannot be had, within the bounds above."""
    found = programs()
    if found is None:
        return Pages(reason=f"the server cannot draw PDF pages (install the {PACKAGE} package)")
    pdfinfo, pdftoppm = found
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RENDER_TIMEOUT
    workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="mailyard-pdf-"))
    try:
        src = workdir / "in.pdf"
        await asyncio.to_thread(src.write_bytes, data)
        status, info = await _run([pdfinfo, str(src)], workdir, deadline, "info")
        # the last "Pages:" line: pdfinfo prints the document's Title and
        # other metadata (the sender's text, newlines and all) before it,
        # and after it only fields of its own
        counts = re.findall(r"^Pages:[ \t]+(\d{1,9})[ \t]*$", info, re.M)
        if status != 0 or not counts:
            return Pages(reason=_reason(status, loop.time() >= deadline))
        pages = int(counts[-1])
        if pages < 1:
            return Pages(reason="the PDF has no pages")
        status, _ = await _run(
            [pdftoppm, "-png", "-r", str(DPI), "-scale-to", str(SCALE_TO), "-f", "1",
             "-l", str(min(pages, MAX_PAGES)), str(src), str(workdir / "page")],
            workdir, deadline, "ppm")
        if status != 0:
            return Pages(reason=_reason(status, loop.time() >= deadline))

        def collect() -> list[bytes]:
            # page-1.png or page-01.png ...: pdftoppm pads to the width of the last number
            files = sorted(workdir.glob("page-*.png"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
            return [p.read_bytes() for p in files[:MAX_PAGES]]

        images = await asyncio.to_thread(collect)
        if not images or not all(i.startswith(PNG_MAGIC) for i in images):
            return Pages(reason="the file could not be read as a PDF")
        return Pages(count=pages, images=images)
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)


class Previewer:
    """The per-process state of PDF previews: the cache, the renders under
    way (a second request for the same part waits for the first), the
    bound on renders at once, and each account's lock and recent renders."""

    def __init__(self) -> None:
        self.cache = PreviewCache()
        self._running: dict[tuple, asyncio.Task[Pages]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._accounts: dict[int, asyncio.Lock] = {}
        self._recent: dict[int, list[float]] = {}
        self._pending: dict[int, int] = {}  # renders under way or waiting, per account

    def _rate_ok(self, account_id: int) -> bool:
        now = time.monotonic()
        recent = [t for t in self._recent.get(account_id, []) if now - t < RATE_WINDOW]
        if len(recent) >= RATE_RENDERS:
            self._recent[account_id] = recent
            return False
        recent.append(now)
        self._recent[account_id] = recent
        if len(self._recent) > 10_000:  # forget accounts idle for a window
            self._recent = {a: ts for a, ts in self._recent.items() if ts and now - ts[-1] < RATE_WINDOW}
        return True

    async def pages(self, key: tuple, account_id: int, data: bytes) -> Pages:
        """The preview of the PDF ``data`` cached under ``key`` (which starts
        with the account id), rendered now if it is not cached."""
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        task = self._running.get(key)
        if task is None:
            if len(data) > MAX_PDF_BYTES:
                pages = Pages(reason=f"it is larger than {MAX_PDF_BYTES // (1024 * 1024)} MB")
                self.cache.put(key, pages)
                return pages
            if not available():  # not cached: the package may be installed later
                return await render_pdf(data)
            if self._pending.get(account_id, 0) >= PENDING_PER_ACCOUNT or len(self._running) >= PENDING_AT_MOST:
                return Pages(reason="other PDF previews are being drawn; try again in a moment")
            if not self._rate_ok(account_id):
                return Pages(reason="too many PDF previews in a short time; try again in a minute")
            task = asyncio.get_running_loop().create_task(self._render(key, account_id, data))
            self._running[key] = task
            self._pending[account_id] = self._pending.get(account_id, 0) + 1
            task.add_done_callback(lambda _t: self._done(key, account_id))
        # shielded: a request that goes away leaves the render to finish for the cache
        return await asyncio.shield(task)

    def _done(self, key: tuple, account_id: int) -> None:
        self._running.pop(key, None)
        left = self._pending.get(account_id, 1) - 1
        if left > 0:
            self._pending[account_id] = left
        else:
            self._pending.pop(account_id, None)

    async def _render(self, key: tuple, account_id: int, data: bytes) -> Pages:
        if self._slots is None:
            self._slots = asyncio.Semaphore(MAX_RENDERS)
        if len(self._accounts) > 10_000:  # forget the locks nobody holds
            self._accounts = {a: lk for a, lk in self._accounts.items() if lk.locked()}
        lock = self._accounts.setdefault(account_id, asyncio.Lock())
        async with lock, self._slots:
            pages = await render_pdf(data)
        self.cache.put(key, pages)
        return pages


def previewer(request: Request) -> Previewer:
    return request.app.state.pdf_previews


async def _part_pages(request: Request) -> tuple[str, Pages]:
    """The base URL of the message and the preview of its PDF part ``spec``,
    after the session's access checks (404 for what is not its own)."""
    session = current(request)
    box = await own_mailbox(request, session, request.path_params["box_id"])
    uid = request.path_params["uid"]
    spec = request.path_params["spec"]
    base = f"/box/{box.id}/msg/{uid}"
    key = (session.account_id, box.id, box.uid_validity, uid, spec)
    cached = previewer(request).cache.get(key)
    if cached is not None:
        if await message_info(request, box, uid) is None:  # expunged since
            raise HTTPException(404, "no such message")
        return base, cached
    raw = await read_raw(request, box, uid)
    try:
        found = await state(request).pool.run(part_content, raw, spec)
    except TooComplex as exc:
        return base, Pages(reason=f"the message is too complex to open its parts ({exc})")
    if found is None or found[1] != "application/pdf":
        raise HTTPException(404, "no such PDF part")
    return base, await previewer(request).pages(key, session.account_id, found[0])


async def preview_page(request: Request) -> Response:
    """The frame page: the first pages as images, or why there are none."""
    base, pages = await _part_pages(request)
    spec = html.escape(request.path_params["spec"])
    style = (
        "<style>body{margin:0;padding:8px;font:14px/1.4 system-ui,sans-serif;color:#111;background:#e8e8e8}"
        "figure{margin:0 auto 12px;max-width:100%;text-align:center}"
        "img{display:block;margin:0 auto;max-width:100%;height:auto;background:#fff;"
        "box-shadow:0 1px 4px rgba(0,0,0,.3)}figcaption{color:#555;font-size:12px;margin-top:4px}"
        "p{margin:8px}"
        "@media (prefers-color-scheme:dark){body{background:#16181c;color:#e6e8eb}figcaption{color:#9aa0a6}}"
        "</style>"
    )
    if pages.images:
        shown = len(pages.images)
        note = (f"<p class=\"shown\">First {shown} of {pages.count} pages shown.</p>"
                if pages.count > shown else "")
        figures = "".join(
            f"<figure><img src=\"{base}/part/{spec}/page/{n}\" alt=\"Page {n} of {pages.count}\" "
            f"loading=\"lazy\"><figcaption>page {n} of {pages.count}"
            f"{f' (first {shown} shown)' if pages.count > shown else ''}</figcaption></figure>"
            for n in range(1, shown + 1))
        body = note + figures
    else:
        body = f"<p class=\"unavailable\">Preview not available: {html.escape(pages.reason)}.</p>"
    doc = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>PDF preview</title>{style}</head>"
           f"<body>{body}</body></html>")
    response = HTMLResponse(doc)
    response.headers["Content-Security-Policy"] = FRAME_CSP
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


async def page_image(request: Request) -> Response:
    """Page ``n`` (from 1) of the preview as PNG."""
    _base, pages = await _part_pages(request)
    n = request.path_params["n"]
    if not 1 <= n <= len(pages.images):
        raise HTTPException(404, "no such page in the preview")
    return Response(pages.images[n - 1], media_type="image/png", headers={
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": IMAGE_CSP,
        "Content-Disposition": f"inline; filename=\"page-{n}.png\"",
    })


def routes() -> list[Route]:
    return [
        Route("/box/{box_id:int}/msg/{uid:int}/part/{spec:str}/preview", preview_page),
        Route("/box/{box_id:int}/msg/{uid:int}/part/{spec:str}/page/{n:int}", page_image),
    ]
