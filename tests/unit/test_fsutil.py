"""fsutil.write_atomic: the one way mailyard replaces a file durably."""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

import pytest

from mailyard import fsutil
from mailyard.fsutil import write_atomic


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_replaces_the_content_with_the_mode_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "active"
    path.write_bytes(b"old\n")
    write_atomic(path, b"new\n", mode=0o640)
    assert path.read_bytes() == b"new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert _names(tmp_path) == ["active"]


def test_private_by_default_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_atomic(tmp_path / "key.pem", b"secret")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "key.pem").stat().st_mode) == 0o600


def test_the_mode_is_set_before_the_data_is_there_and_the_rename_is_synced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fsync is watched: the one of the file finds the data in a
    temporary file of the same folder that already has the final mode; the
    one of the folder comes after the new content has its name."""
    path = tmp_path / "key.pem"
    path.write_bytes(b"old key")
    real_fsync = os.fsync
    seen: list[tuple[str, int, list[str], bytes]] = []

    in_temp: list[bytes] = []
    sizes_at_chmod: list[int] = []
    real_fchmod = os.fchmod

    def watching_fsync(fd: int) -> None:
        st = os.fstat(fd)
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
        seen.append((kind, stat.S_IMODE(st.st_mode), _names(tmp_path), path.read_bytes()))
        if kind == "file":  # what the file holds on disk when it is synced: all of it, flushed
            in_temp.append(os.pread(fd, 100, 0))
        real_fsync(fd)

    def watching_fchmod(fd: int, mode: int) -> None:
        sizes_at_chmod.append(os.fstat(fd).st_size)
        real_fchmod(fd, mode)

    monkeypatch.setattr(fsutil.os, "fsync", watching_fsync)
    monkeypatch.setattr(fsutil.os, "fchmod", watching_fchmod)
    write_atomic(path, b"new key", mode=0o400)
    assert sizes_at_chmod == [0]
    assert in_temp == [b"new key"]

    assert [s[0] for s in seen] == ["file", "dir"]
    _, file_mode, names, content = seen[0]
    assert file_mode == 0o400
    temps = [n for n in names if n != "key.pem"]
    assert len(temps) == 1 and temps[0].startswith(".key.pem.") and temps[0].endswith(".tmp")
    assert content == b"old key"  # the old file stays whole until the rename
    assert seen[1][2] == ["key.pem"] and seen[1][3] == b"new key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o400


@pytest.mark.parametrize("failing", ["fsync", "replace", "write"])
def test_a_failure_keeps_the_old_file_and_leaves_no_temporary_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    path = tmp_path / "policy.json"
    path.write_bytes(b"old")

    def broken(*args: object) -> None:
        raise OSError(28, "No space left on device")

    if failing == "write":
        data: object = "text, not bytes"  # the write itself raises (TypeError)
        expected: type[BaseException] = TypeError
    else:
        monkeypatch.setattr(fsutil.os, failing, broken)
        data, expected = b"new", OSError
    with pytest.raises(expected):
        write_atomic(path, data)  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert _names(tmp_path) == ["policy.json"]


def test_exclusive_creates_but_never_replaces(tmp_path: Path) -> None:
    path = tmp_path / "srs.secret"
    write_atomic(path, b"first", exclusive=True)
    with pytest.raises(FileExistsError):
        write_atomic(path, b"second", exclusive=True)
    assert path.read_bytes() == b"first"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _names(tmp_path) == ["srs.secret"]


def test_concurrent_writers_never_share_a_temporary_file(tmp_path: Path) -> None:
    """Threads replacing one file at once: every write succeeds, the file
    ends as one writer's whole content, and no temporary file is left."""
    path = tmp_path / "active"
    writers, rounds = 8, 25
    contents = {b"%d:" % i + bytes([65 + i]) * (4096 + i) for i in range(writers)}
    start = threading.Barrier(writers)
    errors: list[BaseException] = []
    torn: list[bytes] = []

    def writer(data: bytes) -> None:
        start.wait()
        for _ in range(rounds):
            try:
                write_atomic(path, data)
                seen = path.read_bytes()
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)
                return
            if seen not in contents:
                torn.append(seen[:20])

    threads = [threading.Thread(target=writer, args=(data,)) for data in contents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert torn == []
    assert path.read_bytes() in contents
    assert _names(tmp_path) == ["active"]


def test_exclusive_creators_at_once_one_wins(tmp_path: Path) -> None:
    """Threads creating one secret at once: exactly one succeeds, every
    other gets FileExistsError, and the file is the winner's whole."""
    path = tmp_path / "scram.secret"
    racers = 8
    start = threading.Barrier(racers)
    won: list[bytes] = []
    lost: list[BaseException] = []

    def racer(data: bytes) -> None:
        start.wait()
        try:
            write_atomic(path, data, exclusive=True)
            won.append(data)
        except FileExistsError as exc:
            lost.append(exc)

    threads = [threading.Thread(target=racer, args=(bytes([65 + i]) * 32,)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == racers - 1
    assert path.read_bytes() == won[0]
    assert _names(tmp_path) == ["scram.secret"]


def test_exclusive_without_hard_links_creates_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(*args: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(fsutil.os, "link", no_links)
    path = tmp_path / "gen.rsa.pem"
    write_atomic(path, b"key", exclusive=True)
    assert path.read_bytes() == b"key" and stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_atomic(path, b"other", exclusive=True)
    assert path.read_bytes() == b"key"
    assert _names(tmp_path) == ["gen.rsa.pem"]


def test_a_directory_that_cannot_be_synced_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync
    synced: list[str] = []

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced.append("dir")
            raise OSError(errno.EINVAL, "Invalid argument")
        synced.append("file")
        real_fsync(fd)

    monkeypatch.setattr(fsutil.os, "fsync", fsync)
    path = tmp_path / "active"
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new" and synced == ["file", "dir"]
    synced.clear()
    write_atomic(path, b"newer", sync_directory=False)
    assert path.read_bytes() == b"newer" and synced == ["file"]
