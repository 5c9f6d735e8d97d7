"""The shape of the IMAP layer: sans-I/O imports, one-step commands (the
eager FETCH path of net/session_protocol.py), and how it answers a backend
that refuses or breaks."""

from __future__ import annotations

import ast
import pathlib

import pytest

import mailyard.protocols.imap as imap_pkg
from mailyard.protocols.imap import commands as c
from mailyard.protocols.imap.backend import BackendError
from mailyard.protocols.imap.memory import MemoryBackend

from .helpers import connect

PACKAGE = pathlib.Path(imap_pkg.__file__).parent
FORBIDDEN = ("asyncio", "socket", "ssl", "selectors", "time", "threading", "sqlite3",
             "mailyard.net", "mailyard.store", "mailyard.server", "mailyard.auth", "mailyard.delivery",
             "mailyard.policy", "mailyard.web")


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                parts = ["mailyard", "protocols", "imap", *path.relative_to(PACKAGE).parts[:-1]]
                base = parts[: len(parts) - node.level + 1]
                out.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                out.add(node.module)
    return out


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_imap_layer_does_no_io(path: pathlib.Path) -> None:
    """DESIGN.md: a protocol engine never touches a socket, the clock or the store."""
    bad = {m for m in _imports(path) for f in FORBIDDEN if m == f or m.startswith(f + ".")}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_a_fetch_completes_in_one_step() -> None:
    """With a backend that does not wait, a command's coroutine finishes on
    its first send(None): no task switch per FETCH on the server."""
    client = connect(select="INBOX")
    session = client.session
    session.engine.receive_data(b"a1 FETCH 1:* (FLAGS BODY.PEEK[HEADER] ENVELOPE)\r\n")
    cmd = session.engine.next_event()
    assert isinstance(cmd, c.Fetch)
    step = session.execute(cmd)
    with pytest.raises(StopIteration):
        step.send(None)
    assert session.engine.data_to_send().endswith(b"a1 OK FETCH completed\r\n")


def test_a_refusing_backend_is_answered_no() -> None:
    client = connect(select="INBOX")

    async def refuse(*args: object) -> None:
        raise BackendError("mailbox is locked")

    backend = client.session.backend
    assert isinstance(backend, MemoryBackend)
    backend.mailbox_status = refuse  # type: ignore[method-assign]
    client.expect("a1 STATUS INBOX (MESSAGES)", "a1 NO mailbox is locked")


def test_a_crash_is_answered_serverbug_and_the_session_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    client = connect(select="INBOX")

    async def crash(*args: object) -> None:
        raise RuntimeError("bug")

    client.session.backend.list_mailboxes = crash  # type: ignore[union-attr, method-assign]
    client.expect('a1 LIST "" *', "a1 NO [SERVERBUG] Internal server error")
    assert "LIST crashed" in caplog.text
    client.expect("a2 NOOP", "a2 OK NOOP completed")
