"""The webmail's worker processes (web/worker.py) and the complexity limits
checked before a message is parsed or sanitised (web/render.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from mailyard.web import render
from mailyard.web.worker import RenderPool, TooComplex


def test_worker_past_its_time_is_killed_and_replaced() -> None:
    pool = RenderPool(workers=1, timeout=1.0)

    async def go() -> None:
        assert await pool.run(len, b"abc") == 3
        first = next(iter(pool._workers)).process.pid
        with pytest.raises(TooComplex, match="more than 1 seconds"):
            await pool.run(time.sleep, 60)
        assert not pool._workers  # the stuck worker is gone
        assert await pool.run(len, b"abcd") == 4  # a new one serves the next task
        assert next(iter(pool._workers)).process.pid != first

    try:
        asyncio.run(go())
    finally:
        pool.close()


def test_worker_memory_is_capped() -> None:
    pool = RenderPool(workers=1, timeout=30.0, memory_limit=128 * 1024 * 1024)

    async def go() -> None:
        with pytest.raises(TooComplex, match="MemoryError"):
            await pool.run(bytes, 1024 * 1024 * 1024)
        assert await pool.run(len, b"still here") == 10

    try:
        asyncio.run(go())
    finally:
        pool.close()


def test_deep_html_and_many_parts_are_refused_before_parsing() -> None:
    deep = "<div>" * (render.MAX_HTML_DEPTH + 1) + "x"
    assert render.html_depth(deep) > render.MAX_HTML_DEPTH
    # implied end tags and void elements do not nest
    assert render.html_depth("<p>a" * 5000 + "<br>" * 5000 + "<li>b" * 5000) == 0
    assert render.html_depth("<table><tr><td>" * 400 + "</td></tr></table>" * 400) == 400
    raw = (b"Subject: html\r\nMIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n" + deep.encode())
    with pytest.raises(TooComplex, match="nests more than"):
        render.show(raw, "/b", False)
    many = (b'Subject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
            + b"--b\r\n\r\nx\r\n" * (render.MAX_DISPLAY_PARTS + 1) + b"--b--\r\n")
    with pytest.raises(TooComplex, match="MIME parts"):
        render.check_parts(many)
    # lines starting with -- that are no delimiter do not count
    text = b"Subject: sql\r\n\r\n" + b"-- a comment\r\n" * 5000
    render.check_parts(text)
    assert render.show(text, "/b", False).text.startswith("-- a comment")
