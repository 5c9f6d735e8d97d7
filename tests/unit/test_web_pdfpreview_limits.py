"""The bounds web/pdfpreview.py puts on the programs that draw a PDF, tested
on a stand-in program (this Python) that tries to break each one: a run past
the wall-clock deadline is killed, and the address-space, file-size and
open-file limits hold in the child."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from mailyard.web import pdfpreview


def run(code: str, workdir: Path, seconds: float = 30.0) -> tuple[int, str]:
    async def go() -> tuple[int, str]:
        deadline = asyncio.get_running_loop().time() + seconds
        return await pdfpreview._run([sys.executable, "-c", code], workdir, deadline, "t")

    return asyncio.run(go())


def test_a_well_behaved_child_runs(tmp_path: Path) -> None:
    assert run("print('Pages: 3')", tmp_path) == (0, "Pages: 3\n")


def test_past_the_deadline_the_child_is_killed(tmp_path: Path) -> None:
    status, _ = run("import time; print('started', flush=True); time.sleep(600)", tmp_path, seconds=1.0)
    assert status == -9


def test_address_space_is_bounded(tmp_path: Path) -> None:
    status, out = run("x = bytearray(1024 * 1024 * 1024); print('got it')", tmp_path)
    assert status != 0 and "got it" not in out


def test_file_size_is_bounded(tmp_path: Path) -> None:
    code = (f"f = open('big', 'wb')\nfor _ in range({pdfpreview.MAX_FILE_BYTES // (1 << 20) + 2}): "
            "f.write(bytes(1 << 20)); f.flush()\nprint('wrote it')")
    status, out = run(code, tmp_path)
    assert status != 0 and "wrote it" not in out
    assert (tmp_path / "big").stat().st_size <= pdfpreview.MAX_FILE_BYTES


def test_open_files_are_bounded(tmp_path: Path) -> None:
    code = "fs = []\ntry:\n    while True: fs.append(open('t.out'))\nexcept OSError: print(len(fs))"
    status, out = run(code, tmp_path)
    assert status == 0 and int(out) < pdfpreview.MAX_OPEN_FILES
