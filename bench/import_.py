"""Import and export figures: a 10,000-message account of 20 folders on a
private Dovecot (bench/dovecot.py) moved into mailyard over IMAP, exported
to Maildir++ and imported again from that Maildir.

The source account is written straight into Dovecot's Maildir++ (flags in the
file names, keywords in ``dovecot-keywords``, INTERNALDATE as the file's
mtime), then read once over IMAP so Dovecot has built its indexes before the
clock starts. The same helpers serve the round-trip test
(tests/interop/test_import_dovecot.py).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from .common import Result, progress
from .corpus import corpus
from .dovecot import Dovecot, available

USER = "alice@example.test"
PASSWORD = "alice-source-pw"
FOLDERS = ["INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive", "Lists", "Lists/python", "Lists/debian",
           "Lists/debian/security", "Work", "Work/2023", "Work/2024", "Family", "Travel", "Receipts",
           "Projects/mailyard", "Projects/other", "Café & Thé", "Old"]
KEYWORDS = ["$Forwarded", "$Label1", "work", "$Junk", "todo"]
SYSTEM = [("S", "\\Seen"), ("R", "\\Answered"), ("F", "\\Flagged"), ("D", "\\Draft"), ("T", "\\Deleted")]
Folder = list[tuple[bytes, frozenset[str], float]]


def build_account(count: int, seed: int = 23) -> dict[str, Folder]:
    """``count`` messages spread over FOLDERS, each with flags, keywords and a date;
    some carry body lines starting with "From " (the mbox trap)."""
    rng = random.Random(seed)
    msgs = corpus(count, seed=seed)
    out: dict[str, Folder] = {name: [] for name in FOLDERS}
    when = 1_600_000_000.0
    for n, raw in enumerate(msgs):
        if n % 7 == 0:
            raw = raw + b"\r\nFrom here on, a line mbox must quote.\r\n>From an already quoted line\r\n"
        flags = {flag for _letter, flag in SYSTEM if rng.random() < 0.3}
        flags |= {kw for kw in KEYWORDS if rng.random() < 0.2}
        when += rng.randint(60, 4000)
        out[FOLDERS[n % len(FOLDERS)] if n % 3 else "INBOX"].append((raw, frozenset(flags), when))
    return out


def _encode(name: str) -> str:
    from mailyard.protocols.imap import utf7

    return utf7.encode(name)


def write_maildir(root: Path, account: dict[str, Folder]) -> None:
    """The account as Dovecot's own Maildir++ (LF files, ``,S=`` and ``,W=``)."""
    for name, messages in account.items():
        folder = root if name == "INBOX" else root / ("." + ".".join(_encode(p) for p in name.split("/")))
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        if folder != root:
            (folder / "maildirfolder").touch()
        (folder / "dovecot-keywords").write_text("".join(f"{i} {kw}\n" for i, kw in enumerate(KEYWORDS)))
        for n, (raw, flags, when) in enumerate(messages):
            lf = raw.replace(b"\r\n", b"\n")
            letters = sorted(letter for letter, flag in SYSTEM if flag in flags)
            letters += [chr(ord("a") + i) for i, kw in enumerate(KEYWORDS) if kw in flags]
            path = folder / "cur" / f"{int(when)}.M{n}P1.src,S={len(lf)},W={len(raw)}:2,{''.join(letters)}"
            path.write_bytes(lf)
            os.utime(path, (when, when))


class MaildirDovecot(Dovecot):
    """A private Dovecot serving a copy of the Maildir++ tree ``source`` (or an empty one)."""

    def __init__(self, source: Path | None = None, account: dict[str, Folder] | None = None) -> None:
        super().__init__(("imap",), USER, "", PASSWORD, [])
        self.source = source
        self.account = account

    def _write_maildir(self, root: Path) -> None:
        if self.source is not None:
            shutil.copytree(self.source, root)
        else:
            root.mkdir(parents=True)
            if self.account is not None:
                write_maildir(root, self.account)


_FETCH_META = re.compile(rb'UID (\d+) FLAGS \(([^)]*)\) INTERNALDATE "([^"]+)"')


def read_imap(port: int, host: str = "127.0.0.1") -> dict[str, list[tuple[int, bytes, frozenset[str], float]]]:
    """Every folder as (UID, BODY[], flags without \\Recent, INTERNALDATE) in UID order,
    with the folder's UIDVALIDITY under the key ``"<name> UIDVALIDITY"`` as ``[(v, b"", (), 0)]``."""
    from mailyard.transfer import imapsource

    conn = imapsource.connect(imapsource.SourceSettings(host, port, "none", USER, PASSWORD))
    out: dict[str, list[tuple[int, bytes, frozenset[str], float]]] = {}
    try:
        for f in imapsource.list_folders(conn):
            if not f.selectable:
                continue
            name = "/".join(f.parts)
            validity, uids = imapsource.examine(conn, f.name)
            rows = []
            if uids:
                typ, data = conn.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE BODY.PEEK[])")
                for item in data:
                    if isinstance(item, tuple):
                        m = _FETCH_META.search(item[0])
                        assert m, item[0]
                        flags = frozenset(x.decode() for x in m[2].split() if x != b"\\Recent")
                        date = datetime.strptime(m[3].decode().strip(), "%d-%b-%Y %H:%M:%S %z").timestamp()
                        rows.append((int(m[1]), item[1], flags, date))
            out[name] = sorted(rows)
            out[name + " UIDVALIDITY"] = [(validity, b"", frozenset(), 0.0)]
    finally:
        conn.logout()
    return out


def mailyard(data: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailyard", "--data", str(data), *args],
                          input=stdin, capture_output=True, text=True, timeout=1800)


def _hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def mailyard_peak(data: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str, int]:
    """Run a command as ``mailyard`` does; also return its peak RSS in KiB
    (VmHWM, read until it exits: wait4's ru_maxrss would include the parent's
    size inherited across fork and exec)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "mailyard", "--data", str(data), *args],
                                stdin=subprocess.PIPE, stdout=out, stderr=err)
        assert proc.stdin is not None
        proc.stdin.write((stdin or "").encode())
        proc.stdin.close()
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _hwm_kib(proc.pid))
            time.sleep(0.02)
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read().decode(), err.read().decode(), peak


def read_store(data: Path, address: str = USER) -> dict[str, list[tuple[int, bytes, frozenset[str], float]]]:
    """Every folder of an account in the store, as ``read_imap`` gives them."""
    from mailyard.store import open_store

    async def main() -> dict[str, list[tuple[int, bytes, frozenset[str], float]]]:
        store = open_store(data, background=False)
        try:
            account = await store.get_account(address)
            assert account is not None
            out = {}
            for box in await store.list_mailboxes(account.id):
                infos = {m.uid: m for m in await store.list_messages(box)}
                rows = await store.read_messages(box, list(infos))
                out[box.name] = [(uid, data, infos[uid].flags, infos[uid].internal_date) for uid, data in rows]
                out[box.name + " UIDVALIDITY"] = [(box.uid_validity, b"", frozenset(), 0.0)]
            return out
        finally:
            await store.close()

    return asyncio.run(main())


def new_data_dir(root: Path, *users: str) -> Path:
    data = root / "data"
    r = mailyard(data, "init", "--domain", "example.test")
    assert r.returncode == 0, r.stderr
    for user in users:
        r = mailyard(data, "user", "add", user, "--password-stdin", stdin="user-password-1\n")
        assert r.returncode == 0, r.stderr
    return data


def run(quick: bool = False) -> list[Result]:
    if not available():
        progress("dovecot not installed: import bench skipped")
        return []
    count = 1000 if quick else 10_000
    account = build_account(count)
    octets = sum(len(raw) for msgs in account.values() for raw, _f, _d in msgs)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="mailyard-bench-import-") as tmp:
        root = Path(tmp)
        data = new_data_dir(root, USER, "copy@example.test")
        peaks: dict[str, int] = {}
        with MaildirDovecot(account=account) as dove:
            read_imap(dove.ports["imap"])  # Dovecot builds its indexes before the clock starts
            progress(f"import imap: {count} messages, {octets / 1e6:.1f} MB, {len(FOLDERS)} folders")
            imap_args = ("import", "imap", "--host", "127.0.0.1", "--port", str(dove.ports["imap"]),
                         "--user", USER, "--password-stdin", "--to", USER)
            t0 = time.perf_counter()
            rc, _out, err, peaks["import imap"] = mailyard_peak(data, *imap_args, stdin=PASSWORD + "\n")
            t_imap = time.perf_counter() - t0
            assert rc == 0, err
            t0 = time.perf_counter()
            rc, _out, err, _peak = mailyard_peak(data, *imap_args, stdin=PASSWORD + "\n")
            t_rerun = time.perf_counter() - t0
            assert rc == 0, err
        t0 = time.perf_counter()
        rc, _out, err, peaks["export maildir"] = mailyard_peak(data, "export", USER, str(root / "export"))
        t_export = time.perf_counter() - t0
        assert rc == 0, err
        t0 = time.perf_counter()
        rc, _out, err, peaks["export mbox"] = mailyard_peak(data, "export", USER, str(root / "mbox"),
                                                            "--format", "mbox")
        t_mbox = time.perf_counter() - t0
        assert rc == 0, err
        t0 = time.perf_counter()
        rc, _out, err, peaks["import maildir"] = mailyard_peak(data, "import", "maildir", str(root / "export"),
                                                               "--to", "copy@example.test")
        t_maildir = time.perf_counter() - t0
        assert rc == 0, err
    ref = f"{count} msgs, {octets / 1e6:.0f} MB, {len(FOLDERS)} folders, whole command incl. start-up"
    for name, secs in (("import imap (Dovecot, loopback)", t_imap), ("import maildir", t_maildir),
                       ("export maildir", t_export), ("export mbox", t_mbox)):
        results.append(Result("import", f"{name} msg/s", count / secs, "msg/s", ref))
        results.append(Result("import", f"{name} MB/s", octets / 1e6 / secs, "MB/s", ref))
    for name, kib in peaks.items():
        results.append(Result("import", f"{name} peak RSS", kib / 1024, "MB", ref))
    results.append(Result("import", "import imap, whole account", t_imap, "s", "issue: well under a minute"))
    results.append(Result("import", "import imap re-run (nothing new)", t_rerun, "s", ref))
    return results
