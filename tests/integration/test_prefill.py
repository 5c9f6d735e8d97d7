"""The background fills of tests/integration/prefill.py end with the test
session that started them, however it ends: a session killed outright
(SIGKILL, or SIGTERM from ``timeout``, which runs no pytest hook) must not
leave a fill running for up to half an hour on the machine's cores, nor its
data directory behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..waiting import wait_until
from .prefill import ROOT


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_a_fill_ends_when_its_session_is_killed(tmp_path: Path) -> None:
    (tmp_path / "slow_fill_module.py").write_text("import time\n\ndef _fill(data):\n    time.sleep(600)\n")
    session = (
        "import time\n"
        "from tests.integration import prefill\n"
        "proc, data = prefill._spawn('slow_fill_module')\n"
        "print(proc.pid, data, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "src"), str(ROOT)])}
    parent = subprocess.Popen([sys.executable, "-c", session], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid_text, data_text = parent.stdout.readline().split()
        fill, data = int(pid_text), Path(data_text)
        # the fill has made its directory and runs the module's _fill
        wait_until(lambda: (data / "mailyard.toml").exists() or any(data.glob("*")), timeout=60,
                   what="the fill's data directory")
        assert _alive(fill)
    finally:
        parent.kill()
        parent.wait()
    wait_until(lambda: not _alive(fill), timeout=15, what="the fill to end after its session was killed")
    wait_until(lambda: not data.parent.parent.exists(), timeout=15, what="the fill's directory to be removed")
