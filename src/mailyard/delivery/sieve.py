"""Sieve at local delivery: where each account's scripts live, and what
their actions become.

Scripts are files: ``DATA/sieve/<account id>/<name>.sieve``, the active
one named by the file ``active`` beside them (one line: the script name);
the site's scripts that ``include :global`` reaches (RFC 6609) are
``DATA/sieve/global/<name>.sieve``.
Files keep the schema untouched and let an operator read and back up a
user's filters as text. A script is compiled when it is stored (``put``
refuses one that does not compile, RFC 5804 2.6) and its compiled form is
kept in memory keyed by the file's size and modification time, so a
delivery re-reads nothing that did not change.

``SieveDelivery.plan`` runs the account's active script on a message: the
result says which mailboxes (with which IMAP flags) get a copy, where to
redirect, whether to reject and what vacation reply to send. A script that
fails (a limit, conflicting actions, a ``fileinto`` to a mailbox that does
not exist without ``:create``) never loses the message: it is kept in the
INBOX and a log line says why (RFC 5228 2.10.6).

The run itself happens off the event loop, in a thread of a small pool of
its own (``SIEVE_THREADS``): a script is the user's code and the message
the sender's, and the loop serves every other session of the worker. The
interpreter is pure Python and still competes with the loop for the GIL,
so it also keeps its own bounds (``Limits``: a deadline every test looks
at, the MIME parts a ``body`` test parses); with few threads the loop
waits for the GIL at most a switch interval or two. The records of
vacation replies and duplicate ids (files written and synced) are read
and written in a thread too, as ManageSieve and webmail write scripts.

Vacation replies sent are recorded under ``DATA/sieve/<account id>/vacation/``
(one small file per sender and handle holding the time until which no
other reply goes to that sender, RFC 5230 4.2), so the record survives a
restart.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .. import logs
from ..fsutil import write_atomic
from ..sieve import (
    Discard,
    DuplicateMark,
    Envelope,
    FileInto,
    Keep,
    Limits,
    Notify,
    Redirect,
    Reject,
    Script,
    SieveError,
    SieveMessage,
    SieveRuntimeError,
    Vacation,
    compile_script,
    run,
)
from ..store.api import Account, InvalidName, Store

log = logging.getLogger("mailyard.sieve")

ACTIVE = "active"
SUFFIX = ".sieve"
MAX_SCRIPT_BYTES = 256 * 1024
MAX_SCRIPTS = 32
# RFC 5804 1.6: script names are Unicode without control characters;
# here also no "/" (a file name) and no leading dot.
_NAME = re.compile(r"[^\x00-\x1f\x7f/\\]{1,128}")


MAILBOX_TTL = 2.0

# Threads that run scripts, per process. The interpreter holds the GIL
# while it works, so more threads add no throughput, only more contenders
# the event loop waits behind; two let a short script pass a long one.
SIEVE_THREADS = 2


class ScriptProblem(Exception):
    """A script name, size or count refused, or no such script; the text
    is fit for the user."""


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or name.startswith(".") or name == ACTIVE:
        raise ScriptProblem(f"bad script name {name!r}")
    return name


class ScriptStore:
    """The scripts of every account under ``root`` (``DATA/sieve``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._compiled: dict[Path, tuple[tuple[int, int, int], Script]] = {}
        # account id -> (mtime of its directory, when that was seen, the active script)
        self._active: dict[int, tuple[int, int, Script | None]] = {}

    def dir(self, account_id: int) -> Path:
        return self.root / str(int(account_id))

    def list(self, account_id: int) -> list[tuple[str, bool]]:
        """(name, active) for each script, by name."""
        d = self.dir(account_id)
        if not d.is_dir():
            return []
        active = self.active_name(account_id)
        names = sorted(p.name[: -len(SUFFIX)] for p in d.iterdir() if p.name.endswith(SUFFIX))
        return [(n, n == active) for n in names]

    def active_name(self, account_id: int) -> str | None:
        try:
            name = (self.dir(account_id) / ACTIVE).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return name or None

    def get(self, account_id: int, name: str) -> str:
        try:
            return _read(self.dir(account_id) / (check_name(name) + SUFFIX))
        except FileNotFoundError:
            raise ScriptProblem(f"no script named {name!r}") from None

    def put(self, account_id: int, name: str, text: str) -> Script:
        """Compile ``text`` (SieveError when it does not) and store it
        durably (written to a temporary file, synced, renamed)."""
        check_name(name)
        if len(text.encode("utf-8")) > MAX_SCRIPT_BYTES:
            raise ScriptProblem(f"script too large (at most {MAX_SCRIPT_BYTES} bytes)")
        script = compile_script(text)
        names = [n for n, _ in self.list(account_id)]
        if name not in names and len(names) >= MAX_SCRIPTS:
            raise ScriptProblem(f"too many scripts (at most {MAX_SCRIPTS})")
        d = self.dir(account_id)
        d.mkdir(parents=True, exist_ok=True)
        _write(d / (name + SUFFIX), text)
        return script

    def activate(self, account_id: int, name: str | None) -> None:
        """Make ``name`` the active script; None: no script is active."""
        d = self.dir(account_id)
        if name is None:
            try:
                (d / ACTIVE).unlink()
            except FileNotFoundError:
                pass
            return
        self.get(account_id, name)  # exists
        _write(d / ACTIVE, name + "\n")

    def delete(self, account_id: int, name: str) -> None:
        if self.active_name(account_id) == name:
            raise ScriptProblem("the active script cannot be deleted")  # RFC 5804 2.10
        try:
            (self.dir(account_id) / (check_name(name) + SUFFIX)).unlink()
        except FileNotFoundError:
            raise ScriptProblem(f"no script named {name!r}") from None

    def rename(self, account_id: int, old: str, new: str) -> None:
        d = self.dir(account_id)
        src, dst = d / (check_name(old) + SUFFIX), d / (check_name(new) + SUFFIX)
        if not src.exists():
            raise ScriptProblem(f"no script named {old!r}")
        if dst.exists():
            raise ScriptProblem(f"a script named {new!r} exists already")
        os.rename(src, dst)
        if self.active_name(account_id) == old:
            _write(d / ACTIVE, new + "\n")

    def active_script(self, account_id: int) -> Script | None:
        """The compiled active script, or None; raises SieveError if the
        file was changed behind our back into something that does not compile.

        Every change here replaces a file by a rename, which moves the
        directory's modification time: while it stays, one ``stat`` answers.
        A time seen less than two seconds after it was set is not trusted
        (a second change within the file system's clock tick would not show)."""
        d = self.dir(account_id)
        try:
            mtime = d.stat().st_mtime_ns
        except OSError:
            return None
        hit = self._active.get(account_id)
        if hit is not None and hit[0] == mtime and hit[1] - mtime > 2_000_000_000:
            return hit[2]
        seen = time.time_ns()
        script = self._load_active(account_id)
        if len(self._active) > 100_000:
            self._active.clear()
        self._active[account_id] = (mtime, seen, script)
        return script

    def _load_active(self, account_id: int) -> Script | None:
        name = self.active_name(account_id)
        if name is None:
            return None
        return self._compiled_file(self.dir(account_id) / (name + SUFFIX))

    def included(self, account_id: int, location: str, name: str) -> Script | None:
        """The script an ``include`` names (RFC 6609 3.2): one of the
        account's own (:personal) or of ``DATA/sieve/global`` (:global),
        compiled; None when there is none or it does not compile."""
        try:
            check_name(name)
        except ScriptProblem:
            return None
        d = self.root / "global" if location == "global" else self.dir(account_id)
        try:
            return self._compiled_file(d / (name + SUFFIX))
        except (SieveError, OSError, UnicodeDecodeError):
            return None

    def _compiled_file(self, path: Path) -> Script | None:
        try:
            st = path.stat()
        except OSError:
            return None
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        hit = self._compiled.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        script = compile_script(_read(path))
        if len(self._compiled) > 10_000:
            self._compiled.clear()
        self._compiled[path] = (key, script)
        return script


def _read(path: Path) -> str:
    """The text as stored: line ends untouched (GETSCRIPT gives back the
    octets PUTSCRIPT stored)."""
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def _write(path: Path, text: str, *, sync_directory: bool = True) -> None:
    """Replace ``path`` with ``text`` at once and durably (readers see the
    old text or the new, never a part)."""
    write_atomic(path, text.encode("utf-8"), sync_directory=sync_directory)


@dataclass
class Plan:
    """What a script decided for one account's copy of a message."""

    targets: list[tuple[int, frozenset[str]]] = field(default_factory=list)  # mailbox id, IMAP flags
    redirects: list[str] = field(default_factory=list)
    reject: Reject | None = None
    vacation: Vacation | None = None
    actions: list[str] = field(default_factory=list)  # described, for the log
    duplicates: list[DuplicateMark] = field(default_factory=list)  # to record once delivered (RFC 7352)
    notifications: list[Notify] = field(default_factory=list)  # enotify (RFC 5435), sent once delivered
    message: bytes | None = None  # the message as editheader left it (RFC 5293); None: unchanged


class SieveDelivery:
    """Runs the account's active script at delivery (see module doc)."""

    def __init__(self, store: Store, scripts: ScriptStore, separator: str = "+",
                 limits: Limits | None = None) -> None:
        self.store = store
        self.scripts = scripts
        self.separator = separator
        self.limits = limits or Limits(separator=separator)
        self.vacations = VacationLog(scripts.root)
        # (account id, mailbox name) -> (until, mailbox id): the mailboxes
        # scripts file into, looked up once per MAILBOX_TTL seconds as the
        # router's directory cache does for the INBOX (a rename or delete
        # is seen within that time; a stale id fails the delivery, which
        # the sender retries, it never files into another account)
        self._boxes: dict[tuple[int, str], tuple[float, int]] = {}
        self.duplicates = VacationLog(scripts.root, "duplicate")
        self._threads: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Let the script threads end (a run going on finishes by its deadline)."""
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None

    async def plan(self, account: Account, message: bytes | SieveMessage, envelope: Envelope,
                   inbox_id: int) -> Plan | None:
        """The plan for ``account``'s copy; None: no active script (the INBOX).
        ``message``: the bytes, or a ``SieveMessage`` the plans for the
        other recipients of the delivery share (its MIME parse done once)."""
        try:
            script = self.scripts.active_script(account.id)
        except (SieveError, OSError, UnicodeDecodeError) as exc:
            self._failed(account, f"the active script does not load: {exc}")
            return None
        if script is None:
            return None
        try:
            mailboxes: set[str] = set()
            if "mailboxexists" in script.names:
                mailboxes = {b.name for b in await self.store.list_mailboxes(account.id)}
            if self._threads is None:
                self._threads = ThreadPoolExecutor(SIEVE_THREADS, thread_name_prefix="mailyard-sieve")
            # in a thread: the script, its includes and the duplicate records it reads (see module doc)
            result = await asyncio.get_running_loop().run_in_executor(self._threads, functools.partial(
                run, script, message, envelope, self.limits, mailbox_exists=mailboxes.__contains__,
                include=lambda location, name: self.scripts.included(account.id, location, name),
                duplicate_seen=lambda handle, ident: not self.duplicates.due(account.id, handle, ident)))
            plan = await self._apply(account, result.actions, mailboxes, inbox_id)
            plan.duplicates = result.duplicates
            plan.message = result.message
            return plan
        except (SieveRuntimeError, InvalidName, _NoMailbox) as exc:
            self._failed(account, str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - a bug in a run must not refuse the message: INBOX
            log.exception("sieve run for %s failed", account.address)
            self._failed(account, f"internal error: {exc!r}")
            return None

    async def record_duplicates(self, account: Account, marks: Sequence[DuplicateMark]) -> None:
        """RFC 7352 3: the ids of a delivered message's ``duplicate`` tests,
        recorded (a file each, synced) in a thread."""
        if marks:
            await asyncio.to_thread(self._record_duplicates, account.id, list(marks))

    def _record_duplicates(self, account_id: int, marks: list[DuplicateMark]) -> None:
        for mark in marks:
            # RFC 7352 3: with :last the period restarts at each message
            if mark.last or self.duplicates.due(account_id, mark.handle, mark.id):
                self.duplicates.record(account_id, mark.handle, mark.id, mark.seconds)

    def _failed(self, account: Account, why: str) -> None:
        # The user must never lose mail to a bad script: INBOX, and a line saying why.
        logs.event(log, logging.WARNING, "sieve_failed", user=account.address, reason=why[:300])

    async def _apply(self, account: Account, actions: list, mailboxes: set[str], inbox_id: int) -> Plan:
        plan = Plan()
        for action in actions:
            if isinstance(action, Keep):
                plan.targets.append((inbox_id, frozenset(action.flags)))
            elif isinstance(action, FileInto):
                box_id = await self._mailbox(account, action, mailboxes, inbox_id)
                if all(t[0] != box_id for t in plan.targets):
                    plan.targets.append((box_id, frozenset(action.flags)))
            elif isinstance(action, Redirect):
                plan.redirects.append(action.address)
            elif isinstance(action, Reject):
                plan.reject = action
            elif isinstance(action, Vacation):
                plan.vacation = action
            elif isinstance(action, Notify):
                plan.notifications.append(action)
            elif isinstance(action, Discard):
                pass
        return plan

    async def _mailbox(self, account: Account, action: FileInto, mailboxes: set[str], inbox_id: int) -> int:
        name = action.mailbox
        if name.upper() == "INBOX":
            return inbox_id
        now = time.monotonic()
        hit = self._boxes.get((account.id, name))
        if hit is not None and hit[0] > now:
            return hit[1]
        box = await self.store.get_mailbox(account.id, name)
        if box is None:
            if not action.create:
                # RFC 5490 3.2: without :create a missing mailbox is an error
                raise _NoMailbox(f"fileinto {name!r}: no such mailbox (use :create)")
            try:
                # its missing superiors too, as an IMAP CREATE makes them
                # (RFC 5490 3.2, RFC 9051 6.3.4), so that LIST shows the hierarchy
                box = await self.store.create_mailbox(account.id, name, subscribe=True, superiors=True)
            except InvalidName:
                raise
            except Exception:  # noqa: BLE001 - made meanwhile by another delivery
                box = await self.store.get_mailbox(account.id, name)
            if box is None:
                raise _NoMailbox(f"fileinto {name!r}: cannot create the mailbox")
            mailboxes.add(box.name)
        if len(self._boxes) > 100_000:
            self._boxes.clear()
        self._boxes[(account.id, name)] = (now + MAILBOX_TTL, box.id)
        return box.id


class _NoMailbox(Exception):
    pass


class VacationLog:
    """Which senders got a vacation reply, until when (RFC 5230 4.2); with
    ``kind="duplicate"``, which message ids were seen (RFC 7352)."""

    def __init__(self, root: Path, kind: str = "vacation") -> None:
        self.root = Path(root)
        self.kind = kind

    def _path(self, account_id: int, handle: str, sender: str) -> Path:
        key = sender.lower() if self.kind == "vacation" else sender
        digest = hashlib.sha256(f"{handle}\0{key}".encode()).hexdigest()[:32]
        return self.root / str(int(account_id)) / self.kind / digest

    def due(self, account_id: int, handle: str, sender: str, now: float | None = None) -> bool:
        """Whether a reply may go to ``sender`` now."""
        now = time.time() if now is None else now
        try:
            until = float(self._path(account_id, handle, sender).read_text(encoding="ascii"))
        except (OSError, ValueError):
            return True
        return now >= until

    def record(self, account_id: int, handle: str, sender: str, seconds: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        path = self._path(account_id, handle, sender)
        path.parent.mkdir(parents=True, exist_ok=True)
        # a record lost in a crash costs one more reply: its name is left to
        # the file system's own time (the SMTP reply waits for this write)
        _write(path, f"{now + seconds:.0f}", sync_directory=False)
