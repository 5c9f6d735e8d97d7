"""SIGKILL the server while many clients are sending: after a restart every
message that got ``250`` is in its mailbox exactly once and intact, and no
message appears that a client had not finished sending."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mailyard.config import Config
from mailyard.store.sqlite import SQLiteStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailyard", "--data", str(data), "serve"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line.decode(errors="replace"))
        if b"mailyard is running" in line:
            break
    else:
        pytest.fail("server did not start:\n" + "".join(seen))
    # keep draining output so the server never blocks on a full pipe
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc


@pytest.mark.slow
def test_sigkill_under_load_loses_no_acknowledged_message(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    subprocess.run(
        [sys.executable, "-m", "mailyard", "--data", str(data), "init", "--domain", "example.test", "--demo"],
        check=True, capture_output=True,
    )
    cfg = Config.load(data / "config.toml")
    text = (data / "config.toml").read_text()
    for name in ("submission", "smtps", "imap", "imaps", "pop3", "pop3s", "http"):
        text = re.sub(rf"^{name} = \d+$", f"{name} = 0", text, flags=re.M)
    text = re.sub(r"^smtp = \d+$", f"smtp = {port}", text, flags=re.M)
    (data / "config.toml").write_text(text)

    acked: set[str] = set()
    completed: set[str] = set()  # the whole message reached the server
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            mid = f"{n}.{i}"
            i += 1
            body = (f"Subject: crash {mid}\r\nMessage-ID: <{mid}@crash.test>\r\n\r\n" + (f"{mid} " * 20 + "\r\n") * 10)
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=5) as s:
                    s.ehlo()
                    s.mail("load@remote.test")
                    s.rcpt("alice@example.test")
                    s.rcpt("bob@example.test")
                    s.putcmd("data")
                    if s.getreply()[0] != 354:
                        continue
                    s.send(body.encode() + b".\r\n")
                    with lock:
                        completed.add(mid)
                    code, _ = s.getreply()
                    if code == 250:
                        with lock:
                            acked.add(mid)
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)

    for _round in range(3):
        proc = start_server(data)
        stop.clear()
        threads = [threading.Thread(target=client, args=(f"{_round}-{n}",)) for n in range(16)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        stop.set()
        for t in threads:
            t.join()

    assert len(acked) > 50, "the load did not get going"

    import asyncio

    async def read_all() -> dict[str, list[bytes]]:
        store = SQLiteStore(data, cfg.store)
        try:
            out: dict[str, list[bytes]] = {}
            for user in ("alice@example.test", "bob@example.test"):
                account = await store.get_account(user)
                assert account is not None
                box = await store.get_mailbox(account.id, "INBOX")
                assert box is not None
                out[user] = [await store.read_message(box.id, m.uid) for m in await store.list_messages(box.id)]
            return out
        finally:
            await store.close()

    stored = asyncio.run(read_all())
    for user, messages in stored.items():
        ids = []
        for raw in messages:
            m = re.search(rb"Message-ID: <([^@]+)@crash.test>", raw)
            assert m, raw[:300]
            mid = m.group(1).decode()
            # intact: the body is exactly what the client sent
            assert raw.endswith(((f"{mid} " * 20 + "\r\n") * 10).encode()), f"{user}: message {mid} is damaged"
            ids.append(mid)
        assert len(ids) == len(set(ids)), f"{user}: a message is stored twice"
        missing = acked - set(ids)
        assert not missing, f"{user}: acknowledged but lost: {sorted(missing)[:5]}"
        assert set(ids) <= completed, f"{user}: a message appeared that was never sent completely"
