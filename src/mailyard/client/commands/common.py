"""What the ``mailyard mail`` commands share: the account a command works on,
the terminal's output, message ids, an open folder and one message's bytes,
and how a command's parser is added and its errors reported."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..config import Account, AccountStore, ClientError, config_dir


def account_store(args: argparse.Namespace) -> AccountStore:
    """The accounts of the configuration directory ``--config-dir`` names (or the default one)."""
    return AccountStore(config_dir(getattr(args, "config_dir", None)))


def current_account(args: argparse.Namespace) -> tuple[AccountStore, Account]:
    """The accounts and the one the command works on: ``--account``, else the default or only one."""
    store = account_store(args)
    return store, store.get(getattr(args, "account", None))


def err(text: str) -> None:
    """A progress line or warning, on stderr at once."""
    print(text, file=sys.stderr, flush=True)


def terminal() -> Any:
    """Standard output for text a message holds."""
    # Text goes to the terminal in its own charset; what it cannot show becomes "?".
    try:
        sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        pass
    return sys.stdout


def parse_ids(spec: str) -> list[int]:
    """``3``, ``3,5``, ``9-12`` (also ``9:12``) -> UIDs."""
    out: list[int] = []
    for piece in spec.replace(" ", "").split(","):
        if not piece:
            continue
        lo, sep, hi = piece.replace(":", "-").partition("-")
        try:
            if sep:
                a, b = int(lo), int(hi)
                out.extend(range(min(a, b), max(a, b) + 1))
            else:
                out.append(int(lo))
        except ValueError:
            raise ClientError(f"not a message id: {piece!r} (use the UID that 'mailyard mail ls' shows)") from None
    if not out or any(n <= 0 for n in out):
        raise ClientError(f"not a message id: {spec!r}")
    return out



def open_folder(c: Any, folder: str, readonly: bool) -> int:
    """SELECT (or EXAMINE) ``folder``; its message count."""
    try:
        info = c.select_folder(folder, readonly=readonly)
    except Exception as exc:
        raise ClientError(f"cannot open folder {folder}: {reply_text(exc)}") from exc
    return int(info.get(b"EXISTS", 0))


def reply_text(exc: BaseException) -> str:
    """The server's reply an imapclient error carries, as text."""
    arg = exc.args[0] if exc.args else exc
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


def fetch_raw(c: Any, uid: int) -> tuple[bytes, tuple, float | None]:
    """(the message, its flags, its arrival time (INTERNALDATE) as a timestamp)."""
    data = c.fetch([uid], [b"BODY.PEEK[]", b"FLAGS", b"INTERNALDATE"])
    if uid not in data:
        raise ClientError(f"no message with UID {uid} in this folder (see 'mailyard mail ls')")
    item = data[uid]
    raw = item.get(b"BODY[]")
    if raw is None:
        raise ClientError(f"the server sent no body for UID {uid}")
    arrived = item.get(b"INTERNALDATE")
    # imapclient gives local time without a zone; astimezone() reads it as such.
    stamp = arrived.astimezone().timestamp() if arrived is not None else None
    return raw, item.get(b"FLAGS", ()), stamp


# --- parsers ----------------------------------------------------------------------------------


def add_command(sub: Any, common: argparse.ArgumentParser, name: str, help_text: str, func: Any,
                **kw: Any) -> argparse.ArgumentParser:
    """Add command ``name`` to ``sub``, run by ``func`` with its errors reported."""
    q = sub.add_parser(name, parents=[common], help=help_text, description=help_text, **kw)
    q.set_defaults(func=_run(func))
    return q


def add_folder_option(q: argparse.ArgumentParser) -> None:
    """``--folder``: the folder of the message(s) a command names."""
    q.add_argument("--folder", "-f", default="INBOX", help="folder the message is in (default: INBOX)")


def _run(func: Any) -> Any:
    def run(args: argparse.Namespace) -> None:
        try:
            func(args)
        except ClientError as exc:
            sys.stdout.flush()
            print(f"mailyard mail: error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            raise SystemExit(130) from None

    return run
