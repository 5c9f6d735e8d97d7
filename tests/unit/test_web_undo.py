"""Held webmail sends (web/undo.py) where the files of the outbox are not
what a send left: a stray name at start, a record that cannot be opened."""

from __future__ import annotations

import asyncio
import errno
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from mailyard.web import undo


def test_resume_passes_over_files_that_are_not_records(tmp_path: Path) -> None:
    services = SimpleNamespace(data_dir=tmp_path)
    folder = undo.outbox(services)  # type: ignore[arg-type]
    folder.mkdir()
    (folder / "not a token.sending").write_text("{}")
    (folder / "also not one!.json").write_text(json.dumps({"due": 0}))
    assert undo.resume(services) == 0  # type: ignore[arg-type]
    assert sorted(p.name for p in folder.iterdir()) == ["also not one!.json", "not a token.sending"]


def test_a_record_that_cannot_be_claimed_is_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    services = SimpleNamespace(data_dir=tmp_path)

    def no_descriptors(_services: object, _token: str) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(undo, "_claim_send", no_descriptors)

    async def go() -> None:
        await undo.fire(services, "tok")  # type: ignore[arg-type]
        timer = undo._tasks(services).get("tok")  # type: ignore[arg-type]
        assert timer is not None and not timer.done()  # a retry waits
        timer.cancel()

    asyncio.run(go())
