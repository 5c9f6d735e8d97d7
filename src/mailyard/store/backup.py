"""Hot, incremental backups of a data directory, their verification, and
restores (the whole store, or one account into a running server).

A backup is a separate process reading the store's files while servers
(one or several ``[server] workers``) keep writing them; it never writes to
the live store. One run makes one *generation* under the destination:

    DEST/
      0001/                  a complete generation (numbered, oldest first)
        manifest.json        what the generation holds, with checksums per file
        index.sqlite3        the index, one consistent snapshot (rollback journal)
        blobs/00000007.seg   each segment file up to the snapshot's high-water mark
        files/...            the other files of the data directory (config, keys)
      0002/ ...
      .partial-0003-PID/     a run in progress (or one that was killed)

Consistency. The index is copied with SQLite's online-backup API inside one
read transaction of a WAL reader: a snapshot of everything committed before
the transaction began, taken while writers go on (WAL readers do not block
writers, and writers do not restart a backup that runs on the reading
connection itself). A body row is committed only after its bytes are synced
into its segment (store/sqlite/bodies.py), and segments are append-only, so
the bytes ``[0, max(offset + length))`` of each segment the snapshot
references are final: the backup copies exactly those. Small bodies kept in
the index itself (segment 0, store/sqlite/bodies.py ``INLINE_MAX``) come with
the snapshot and have no segment to copy. Compaction may, after
the snapshot, move a segment's bodies elsewhere and delete its file; the
backup therefore opens every segment file *before* the snapshot begins and
reads through those descriptors, which outlive an unlink.

Incremental. A segment already in the previous generation with the same
length (a sealed segment) is hard-linked from it; one that grew (the segment
being written) takes its old prefix from the previous generation and only
the new bytes from the live store; new segments (new mail, and the targets of
compaction) are copied. The index is copied whole each time. A cheap probe
(sha256 of a segment's first and last 64 KiB) guards the reuse against a
destination shared by two stores.

Checksums. Each file's entry in the manifest holds the sha256 of every
4 MiB chunk and a sha256 over those (the file's checksum); a segment that
grew keeps the digests of its unchanged chunks, so an incremental run hashes
only new bytes, and verification names the damaged chunk.

Atomicity. A generation is written into ``.partial-*`` and renamed into
place after its manifest and every file are synced; a run killed at any
point leaves the earlier generations as they were, and the next run clears
the partial directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import AppendItem, Store, StoreError
from .blobs import BODY_DATA, BODY_PLACE, INLINE, body_bytes

FORMAT = 1
MANIFEST = "manifest.json"
DB_FILE = "index.sqlite3"
_CHUNK = 1 << 20  # bytes per read
HASH_CHUNK = 4 << 20  # bytes per checksummed chunk
_PROBE = 64 * 1024

# Files and folders of a data directory a backup leaves out: the store itself
# (copied by snapshot, above), and state that only a running server needs
# (locks, the message spool of transactions in flight, metrics, the
# revocation and settings signals that only make caches forget).
STORE_ENTRIES = frozenset({DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm", f"{DB_FILE}-journal", "blobs"})
TRANSIENT_ENTRIES = frozenset({"run", "locks", "spool", "write.lock", "revocations", "settings-changes",
                               ".write-test"})

Progress = Callable[[str], None]

# Each segment file's high-water mark: the end of its last body. Inline
# bodies (segment 0) are in the index, in no file.
SEGMENT_ENDS = "SELECT segment, max(offset + length) FROM bodies WHERE segment <> ? GROUP BY segment"


class BackupError(StoreError):
    """A backup, verification or restore that cannot go on; the message says why."""


@dataclass
class BackupSummary:
    generation: str
    path: Path
    snapshot_began: float
    messages: int = 0
    accounts: int = 0
    mailboxes: int = 0
    segments_copied: int = 0
    segments_linked: int = 0
    segments_extended: int = 0
    bytes_from_store: int = 0  # read from the live store (index + segment bytes)
    bytes_reused: int = 0  # hard-linked or copied from the previous generation
    total_bytes: int = 0  # the generation's size
    files: int = 0  # other files of the data directory
    seconds: float = 0.0
    removed: list[str] = field(default_factory=list)  # old generations dropped by ``keep``

    def snapshot_began_utc(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.snapshot_began))


def _quiet(_: str) -> None:
    pass


# --- generations --------------------------------------------------------------------


def generations(dest: Path) -> list[Path]:
    """The complete generations under ``dest``, oldest first."""
    if not dest.is_dir():
        return []
    found = [p for p in dest.iterdir() if p.is_dir() and p.name.isdigit() and (p / MANIFEST).is_file()]
    return sorted(found, key=lambda p: int(p.name))


def find_generation(dest: Path, name: str | None = None) -> Path:
    """The generation ``name`` (default: the newest) of the backup at ``dest``."""
    gens = generations(Path(dest))
    if not gens:
        raise BackupError(f"{dest} holds no complete backup")
    if name is None:
        return gens[-1]
    for gen in gens:
        if gen.name == name or (name.isdigit() and int(gen.name) == int(name)):
            return gen
    raise BackupError(f"{dest} has no generation {name} (it has {', '.join(g.name for g in gens)})")


def read_manifest(gen: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((gen / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupError(f"{gen / MANIFEST} cannot be read: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{gen} is in backup format {manifest.get('format')}, this program reads {FORMAT}")
    return manifest


# --- copying ------------------------------------------------------------------------


def _probe(fd: int, length: int) -> str:
    """sha256 of the first and last 64 KiB of ``[0, length)``."""
    h = hashlib.sha256()
    h.update(os.pread(fd, min(length, _PROBE), 0))
    if length > _PROBE:
        start = max(_PROBE, length - _PROBE)
        h.update(os.pread(fd, length - start, start))
    h.update(str(length).encode())
    return h.hexdigest()


class ChunkDigest:
    """sha256 of each ``HASH_CHUNK`` of a file, and of their list (the
    file's checksum). ``chunks``: the digests of a prefix already known
    (whole chunks), so only the bytes after it are hashed."""

    def __init__(self, chunks: list[str] | None = None) -> None:
        self.chunks = list(chunks or [])
        self.size = len(self.chunks) * HASH_CHUNK
        self._h = hashlib.sha256()
        self._n = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), HASH_CHUNK - self._n)
            self._h.update(view[:take])
            self._n += take
            self.size += take
            view = view[take:]
            if self._n == HASH_CHUNK:
                self.chunks.append(self._h.hexdigest())
                self._h, self._n = hashlib.sha256(), 0

    def entry(self) -> dict[str, Any]:
        chunks = self.chunks + ([self._h.hexdigest()] if self._n else [])
        return {"size": self.size, "sha256": hashlib.sha256("".join(chunks).encode()).hexdigest(),
                "chunks": chunks}


def _copy_range(src_fd: int, dst: Any, start: int, end: int, digest: ChunkDigest | None) -> None:
    pos = start
    while pos < end:
        data = os.pread(src_fd, min(_CHUNK, end - pos), pos)
        if not data:
            raise BackupError(f"a file ended at {pos}, before {end}: the store's files are damaged")
        dst.write(data)
        if digest is not None:
            digest.update(data)
        pos += len(data)


def _clone_range(src_fd: int, dst: Any, length: int) -> None:
    """Copy ``[0, length)`` of ``src_fd`` to the start of ``dst`` in the
    kernel (copy_file_range: a reflink where the file system has them)."""
    dst.flush()
    done = 0
    try:
        while done < length:
            n = os.copy_file_range(src_fd, dst.fileno(), length - done, done, done)
            if n == 0:
                raise BackupError("the previous generation's copy is shorter than its manifest says")
            done += n
    except OSError:
        os.lseek(dst.fileno(), done, os.SEEK_SET)
        _copy_range(src_fd, dst, done, length, None)
        return
    os.lseek(dst.fileno(), done, os.SEEK_SET)


def _hash_file(path: Path) -> dict[str, Any]:
    digest = ChunkDigest()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.entry()


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _other_files(data_dir: Path, dest: Path) -> list[Path]:
    """The data directory's own files a restore needs (config.toml, tls/,
    dkim/, the SCRAM salt secret, ...): everything but the store and the
    transient state, and never the backup destination itself."""
    out: list[Path] = []
    dest_real = dest.resolve()
    for root, dirs, names in os.walk(data_dir):
        here = Path(root)
        rel_root = here.relative_to(data_dir)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if d not in STORE_ENTRIES and d not in TRANSIENT_ENTRIES]
            names = [n for n in names if n not in STORE_ENTRIES and n not in TRANSIENT_ENTRIES]
        dirs[:] = [d for d in dirs if (here / d).resolve() != dest_real and not d.startswith(".partial-")]
        for name in names:
            path = here / name
            if path.is_file() and not path.is_symlink():
                out.append(path)
    return sorted(out)


# --- backup ---------------------------------------------------------------------------


def backup(data_dir: Path, dest: Path, keep: int = 0, progress: Progress = _quiet) -> BackupSummary:
    """Write a new generation of ``data_dir``'s backup under ``dest`` while
    the store stays in use; ``keep`` > 0 drops the oldest generations beyond
    that many once the new one is in place."""
    data_dir, dest = Path(data_dir), Path(dest)
    if not (data_dir / DB_FILE).is_file():
        raise BackupError(f"{data_dir} is not a mailyard data directory (no {DB_FILE})")
    # a backup holds password hashes and private keys: for the owner only
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock_fd = os.open(dest / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(f"another backup into {dest} is running") from None
        for stale in dest.glob(".partial-*"):
            progress(f"removing {stale.name}, left by an interrupted run")
            shutil.rmtree(stale, ignore_errors=True)
        gens = generations(dest)
        number = int(gens[-1].name) + 1 if gens else 1
        previous = gens[-1] if gens else None
        partial = dest / f".partial-{number:04d}-{os.getpid()}"
        partial.mkdir(mode=0o700)
        summary = _write_generation(data_dir, partial, number, previous, progress)
        final = dest / f"{number:04d}"
        os.rename(partial, final)
        _fsync_path(dest)
        summary.path = final
        if keep > 0:
            for old in generations(dest)[:-keep]:
                shutil.rmtree(old)
                summary.removed.append(old.name)
            if summary.removed:
                _fsync_path(dest)
        return summary
    finally:
        os.close(lock_fd)


def _open_segments(blobs: Path, fds: dict[int, int]) -> None:
    if not blobs.is_dir():
        return
    for path in blobs.glob("*.seg"):
        if path.stem.isdigit() and int(path.stem) not in fds:
            with contextlib.suppress(FileNotFoundError):
                fds[int(path.stem)] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def _snapshot(data_dir: Path, target: Path, progress: Progress) -> tuple[dict[int, int], dict[int, int], dict, float]:
    """Copy the index as one snapshot into ``target``; returns the open
    segment descriptors, each referenced segment's high-water mark, counts
    and the time the snapshot began."""
    fds: dict[int, int] = {}
    for _attempt in range(5):
        # Open the segment files first: a compaction committed after the
        # snapshot may delete a file the snapshot still references.
        _open_segments(data_dir / "blobs", fds)
        # Read-only: the connection never writes the store, not even the
        # checkpoint a last connection makes when it closes.
        uri = (data_dir / DB_FILE).resolve().as_uri() + "?mode=ro"
        src = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
        try:
            src.execute("PRAGMA busy_timeout=30000")
            began = time.time()
            src.execute("BEGIN")
            # the first read fixes the snapshot (a WAL read transaction)
            marks = dict(src.execute(SEGMENT_ENDS, (INLINE,)).fetchall())
            counts = {
                "accounts": src.execute("SELECT count(*) FROM accounts").fetchone()[0],
                "mailboxes": src.execute("SELECT count(*) FROM mailboxes").fetchone()[0],
                "messages": src.execute("SELECT count(*) FROM messages").fetchone()[0],
                "bodies": src.execute("SELECT count(*) FROM bodies").fetchone()[0],
            }
            schema_row = src.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            counts["schema_version"] = int(schema_row[0]) if schema_row else 0
            progress(f"snapshot: {counts['messages']} messages in {counts['mailboxes']} mailboxes, "
                     f"{len(marks)} segments")
            dst = sqlite3.connect(target, isolation_level=None)
            try:
                # One step (pages=-1) on the connection holding the read
                # transaction: the copy is that transaction's snapshot.
                src.backup(dst)
                # a self-contained file: no -wal or -shm beside it
                dst.execute("PRAGMA journal_mode=DELETE")
            finally:
                dst.close()
            src.execute("COMMIT")
        finally:
            src.close()
        _open_segments(data_dir / "blobs", fds)
        missing = [s for s in marks if s not in fds]
        if not missing:
            return fds, marks, counts, began
        # a segment made after the listing was compacted away before the
        # snapshot could be read: rare; take the snapshot again
        progress(f"segments {missing} went during the snapshot; taking it again")
        target.unlink()
    for fd in fds.values():
        os.close(fd)
    raise BackupError("the store's segments kept changing under the snapshot; try again")


def _write_generation(
    data_dir: Path, partial: Path, number: int, previous: Path | None, progress: Progress
) -> BackupSummary:
    started = time.monotonic()
    db_copy = partial / DB_FILE
    fds, marks, counts, began = _snapshot(data_dir, db_copy, progress)
    summary = BackupSummary(f"{number:04d}", partial, began, messages=counts["messages"],
                            accounts=counts["accounts"], mailboxes=counts["mailboxes"])
    files: dict[str, dict[str, Any]] = {}
    try:
        files[DB_FILE] = _hash_file(db_copy)
        summary.bytes_from_store += files[DB_FILE]["size"]
        prev_files: dict[str, dict[str, Any]] = read_manifest(previous)["files"] if previous else {}
        (partial / "blobs").mkdir()
        total = sum(marks.values())
        done = 0
        last_report = 0.0
        for i, segment in enumerate(sorted(marks), 1):
            length = marks[segment]
            rel = f"blobs/{segment:08d}.seg"
            fd = fds[segment]
            if os.fstat(fd).st_size < length:
                raise BackupError(f"segment {segment} is shorter than the index says: the live store is damaged")
            entry = _copy_segment(fd, length, partial / rel, prev_files.get(rel), previous, rel, summary)
            files[rel] = entry
            done += length
            now = time.monotonic()
            if now - last_report >= 1.0 or i == len(marks):
                last_report = now
                progress(f"segment {i}/{len(marks)}: {_mb(done)}/{_mb(total)} MB")
        for path in _other_files(data_dir, partial.parent):
            rel = "files/" + path.relative_to(data_dir).as_posix()
            target = partial / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            mode = path.stat().st_mode & 0o7777
            shutil.copyfile(path, target)
            os.chmod(target, mode)
            files[rel] = {**_hash_file(target), "mode": mode}
            summary.files += 1
        for rel in files:
            if not (partial / rel).is_symlink():
                _fsync_path(partial / rel)
        manifest = {
            "format": FORMAT,
            "generation": summary.generation,
            "source": str(data_dir.resolve()),
            "snapshot_began": began,
            "snapshot_began_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(began)),
            "previous": previous.name if previous else None,
            "counts": counts,
            "files": files,
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        _fsync_path(partial / MANIFEST)
        for sub in ("blobs", ""):
            _fsync_path(partial / sub)
    finally:
        for fd in fds.values():
            os.close(fd)
    summary.total_bytes = sum(e["size"] for e in files.values())
    summary.seconds = time.monotonic() - started
    return summary


def _copy_segment(
    fd: int, length: int, target: Path, prev: dict[str, Any] | None, previous: Path | None, rel: str,
    summary: BackupSummary,
) -> dict[str, Any]:
    """Bring one segment's ``[0, length)`` into the new generation, reusing
    the previous generation's copy where it holds the same bytes."""
    if prev is not None and previous is not None and prev["size"] <= length:
        old = previous / rel
        if prev["size"] == length and _probe(fd, length) == prev.get("probe"):
            try:
                os.link(old, target)  # a sealed segment: nothing to copy
            except OSError:  # a file system without hard links: a copy in the kernel
                with old.open("rb") as src, target.open("wb") as out:
                    _clone_range(src.fileno(), out, length)
            summary.segments_linked += 1
            summary.bytes_reused += length
            return dict(prev)
        if prev["size"] < length and _probe(fd, prev["size"]) == prev.get("probe"):
            # The segment being written: its old whole chunks from the
            # previous generation (with their digests), the rest from the store.
            whole = prev["size"] // HASH_CHUNK
            reuse = whole * HASH_CHUNK
            digest = ChunkDigest(prev["chunks"][:whole])
            old_fd = os.open(old, os.O_RDONLY | os.O_CLOEXEC)
            try:
                with target.open("wb") as out:
                    _clone_range(old_fd, out, reuse)
                    _copy_range(fd, out, reuse, length, digest)
            finally:
                os.close(old_fd)
            summary.segments_extended += 1
            summary.bytes_reused += reuse
            summary.bytes_from_store += length - reuse
            return {**digest.entry(), "probe": _probe(fd, length)}
    digest = ChunkDigest()
    with target.open("wb") as out:
        _copy_range(fd, out, 0, length, digest)
    summary.segments_copied += 1
    summary.bytes_from_store += length
    return {**digest.entry(), "probe": _probe(fd, length)}


def _mb(octets: int) -> str:
    return f"{octets / 1e6:.1f}"


# --- verify ---------------------------------------------------------------------------


@dataclass
class VerifyReport:
    generation: Path
    files: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(gen: Path, progress: Progress = _quiet) -> VerifyReport:
    """Check every file of a generation against its manifest (size and
    sha256), the index with SQLite's integrity check, and that every body
    the index references lies within its segment file, or is in the index
    whole."""
    started = time.monotonic()
    report = VerifyReport(gen)
    manifest = read_manifest(gen)
    entries = manifest["files"]
    for i, (rel, entry) in enumerate(sorted(entries.items()), 1):
        path = gen / rel
        try:
            got = _hash_file(path)
        except OSError as exc:
            report.problems.append(f"{rel}: {exc.strerror or exc}")
            continue
        report.files += 1
        report.bytes += got["size"]
        if got["size"] != entry["size"]:
            report.problems.append(f"{rel}: {got['size']} bytes, the manifest says {entry['size']}")
        elif got["sha256"] != entry["sha256"]:
            bad = [i for i, (a, b) in enumerate(zip(got["chunks"], entry["chunks"], strict=True)) if a != b]
            where = ", ".join(f"{i * HASH_CHUNK}-{min((i + 1) * HASH_CHUNK, got['size'])}" for i in bad[:5])
            report.problems.append(f"{rel}: its checksum differs from the manifest's (bytes {where})")
        if i % 50 == 0:
            progress(f"checked {i}/{len(entries)} files")
    if DB_FILE not in entries:
        report.problems.append(f"the manifest lists no {DB_FILE}")
    elif not any(p.startswith(f"{DB_FILE}:") for p in report.problems):
        db = _open_backup_db(gen)
        try:
            check = db.execute("PRAGMA integrity_check").fetchall()
            if check != [("ok",)]:
                report.problems.append(f"{DB_FILE}: integrity check: {'; '.join(r[0] for r in check[:5])}")
            for segment, end in db.execute(SEGMENT_ENDS, (INLINE,)):
                rel = f"blobs/{segment:08d}.seg"
                if rel not in entries:
                    report.problems.append(f"{rel}: referenced by the index, missing from the backup")
                elif entries[rel]["size"] < end:
                    report.problems.append(f"{rel}: the index references bytes up to {end}, it holds "
                                           f"{entries[rel]['size']}")
            if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'body_data'").fetchone():
                bad = db.execute(
                    f"SELECT count(*) FROM bodies b {BODY_DATA} WHERE b.segment = ?"
                    " AND (d.data IS NULL OR length(d.data) <> b.length)", (INLINE,)
                ).fetchone()[0]
                if bad:
                    report.problems.append(f"{DB_FILE}: bodies kept in the index without their bytes: {bad}")
        finally:
            db.close()
    report.seconds = time.monotonic() - started
    return report


def _open_backup_db(gen: Path) -> sqlite3.Connection:
    """The generation's index, read-only, touching nothing beside it."""
    uri = (gen / DB_FILE).resolve().as_uri() + "?mode=ro&immutable=1"
    return sqlite3.connect(uri, uri=True, isolation_level=None)


# --- restore: the whole store -------------------------------------------------------------


@dataclass
class RestoreSummary:
    generation: Path
    target: str
    messages: int = 0
    mailboxes: int = 0
    skipped: int = 0  # messages already present (restore --account merging)
    bytes: int = 0
    files: int = 0
    seconds: float = 0.0
    # mailbox -> the keywords its messages went in without (store/keywords.py bounds)
    keywords_left_out: dict[str, set[str]] = field(default_factory=dict)


def restore_data(gen: Path, new_dir: Path, progress: Progress = _quiet) -> RestoreSummary:
    """Make ``new_dir`` (absent or empty) a data directory holding the
    generation: the index, the segments, and the other files, each checked
    against its sha256 as it is copied. Copies, never links: the restored
    store appends to its segments."""
    started = time.monotonic()
    new_dir = Path(new_dir)
    if new_dir.exists() and any(new_dir.iterdir()):
        raise BackupError(f"{new_dir} is not empty; restore the whole store into a new directory")
    manifest = read_manifest(gen)
    summary = RestoreSummary(gen, str(new_dir), messages=manifest["counts"]["messages"],
                             mailboxes=manifest["counts"]["mailboxes"])
    new_dir.mkdir(parents=True, exist_ok=True)
    (new_dir / "blobs").mkdir(exist_ok=True)
    entries = manifest["files"]
    try:
        for i, (rel, entry) in enumerate(sorted(entries.items()), 1):
            target = new_dir / (rel[len("files/"):] if rel.startswith("files/") else rel)
            # key folders (dkim/, tls/) are private to the server's user
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            digest = ChunkDigest()
            src_fd = os.open(gen / rel, os.O_RDONLY | os.O_CLOEXEC)
            try:
                with target.open("wb") as out:
                    _copy_range(src_fd, out, 0, entry["size"], digest)
                    out.flush()
                    os.fsync(out.fileno())
            finally:
                os.close(src_fd)
            if digest.entry()["sha256"] != entry["sha256"]:
                raise BackupError(f"{gen / rel} differs from its checksum: the backup is damaged "
                                  f"(try an older generation with --generation)")
            os.chmod(target, entry.get("mode", 0o600))
            summary.bytes += entry["size"]
            if rel.startswith("files/"):
                summary.files += 1
            progress(f"restored {i}/{len(entries)} files, {_mb(summary.bytes)} MB")
    except BaseException:
        shutil.rmtree(new_dir, ignore_errors=True)
        raise
    for sub in ("blobs", ""):
        _fsync_path(new_dir / sub)
    summary.seconds = time.monotonic() - started
    return summary


# --- restore: one account into a running server ---------------------------------------------


async def restore_account(
    gen: Path, store: Store, address: str, as_folder: str | None = None, progress: Progress = _quiet,
    batch_bytes: int = 16 << 20, batch_messages: int = 500,
) -> RestoreSummary:
    """Put one account's mail from the generation into ``store`` (a live
    store, possibly served meanwhile) through its normal write path, with
    flags, keywords and INTERNALDATE. Each mailbox goes to the same name, or
    under ``as_folder`` (a new folder tree); a message the target mailbox
    already holds (same size, INTERNALDATE and bytes) is skipped, so a
    merge, and a re-run, adds nothing twice. The account is created, with its
    backed-up credentials, if the store no longer has it."""
    started = time.monotonic()
    summary = RestoreSummary(gen, address)
    manifest = read_manifest(gen)
    db = _open_backup_db(gen)
    seg_fds: dict[int, int] = {}
    try:
        row = db.execute(
            "SELECT id, address, password_hash, apop_secret, scram_sha256 FROM accounts WHERE address = ?",
            (address,),
        ).fetchone()
        if row is None:
            raise BackupError(f"the backup {gen} has no account {address}")
        old_id = row[0]
        # a generation of a store before version 10 has no inline bodies
        inline = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'body_data'").fetchone()
        places, joined = (BODY_PLACE, BODY_DATA) if inline else ("b.segment, b.offset, b.length, NULL", "")

        def read(segment: int, offset: int, length: int) -> bytes:
            return _read_body(gen, manifest, seg_fds, segment, offset, length)

        account = await store.get_account(row[1])
        if account is None:
            account = await store.add_account(row[1], row[2], row[3], row[4])
            progress(f"created the account {row[1]} with its backed-up credentials")
        mailboxes = db.execute(
            "SELECT id, name, special_use FROM mailboxes WHERE account_id = ? ORDER BY name", (old_id,)
        ).fetchall()
        for old_mailbox, name, special_use in mailboxes:
            target_name = f"{as_folder}/{name}" if as_folder else name
            mailbox = await store.get_mailbox(account.id, target_name)
            if mailbox is None:
                # under a new tree the special-use roles stay with the live folders
                mailbox = await store.create_mailbox(
                    account.id, target_name, None if as_folder else special_use, subscribe=True
                )
            summary.mailboxes += 1
            before_skipped, before_restored = summary.skipped, summary.messages
            present: dict[tuple[int, float], list[int]] = {}
            for info in await store.list_messages(mailbox):
                present.setdefault((info.size, info.internal_date), []).append(info.uid)
            batch: list[AppendItem] = []
            size = 0
            # keywords past the mailbox's bounds (a backup from before them,
            # or of a store copy) are left out, the messages kept
            left: set[str] = set()
            # row by row: the rows of inline bodies hold their bytes (the
            # file is immutable: nothing changes under the open cursor)
            for prefix, flags, internal_date, *place in db.execute(
                f"SELECT m.prefix, m.flags, m.internal_date, {places}"
                f" FROM messages m JOIN bodies b ON b.id = m.body_id {joined} WHERE m.mailbox_id = ? ORDER BY m.uid",
                (old_mailbox,),
            ):
                try:
                    data = bytes(prefix) + body_bytes(read, *place)
                except OSError as exc:  # an inline body without its bytes (body_bytes)
                    raise BackupError(f"{gen}: a message of {name} cannot be read: {exc.strerror}"
                                      " (run backup verify)") from exc
                candidates = present.get((len(data), internal_date))
                if candidates and await _holds(store, mailbox, candidates, data):
                    summary.skipped += 1
                    continue
                batch.append(AppendItem(data, frozenset(flags.split()), internal_date))
                size += len(data)
                if len(batch) >= batch_messages or size >= batch_bytes:
                    await store.append_many(mailbox, batch, left_out=left)
                    summary.messages += len(batch)
                    summary.bytes += size
                    batch, size = [], 0
                    progress(f"{target_name}: {summary.messages - before_restored} messages restored")
            if batch:
                await store.append_many(mailbox, batch, left_out=left)
                summary.messages += len(batch)
                summary.bytes += size
            if left:
                summary.keywords_left_out[target_name] = left
            progress(f"{target_name}: {summary.messages - before_restored} restored, "
                     f"{summary.skipped - before_skipped} already there")
    finally:
        db.close()
        for fd in seg_fds.values():
            os.close(fd)
    summary.seconds = time.monotonic() - started
    return summary


def _read_body(gen: Path, manifest: dict[str, Any], fds: dict[int, int], segment: int, offset: int,
               length: int) -> bytes:
    fd = fds.get(segment)
    if fd is None:
        rel = f"blobs/{segment:08d}.seg"
        if rel not in manifest["files"]:
            raise BackupError(f"{gen}: the index references {rel}, which the backup lacks")
        fd = fds[segment] = os.open(gen / rel, os.O_RDONLY | os.O_CLOEXEC)
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise BackupError(f"{gen}: segment {segment} is shorter than its index says (run backup verify)")
    return data


async def _holds(store: Store, mailbox: Any, uids: list[int], data: bytes) -> bool:
    """Whether one of ``uids`` of the live mailbox has exactly ``data``
    (each live message stands for one backed-up message only)."""
    for uid in list(uids):
        try:
            live = await store.read_message(mailbox, uid)
        except StoreError:
            continue
        if live == data:
            uids.remove(uid)
            return True
    return False
