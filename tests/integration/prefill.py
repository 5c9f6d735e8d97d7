"""Big mailboxes filled ahead of their tests, in a background process.

A module that needs a data directory holding tens of thousands of messages
names its fill here (FILLS: the module's own ``_fill(data)``). When the
session's tests are collected (tests/conftest.py ``pytest_collection_finish``)
and such a module is among them, a subprocess makes the directory as
``ServeProcess`` does (``init_data``) and runs the fill, on the core the
serial test run leaves idle; the module's fixture then takes the finished
directory with ``filled(module)`` (waiting if the fill is still running)
and serves it with ``ServeProcess(..., made=True)``. The directory and its
contents are the same as a fill in the fixture's own setup would make.

Under pytest-xdist every worker collects every test, but runs only some: the
controller process starts the fills instead (``start`` from the conftest's
``pytest_xdist_node_collection_finished``), each once, in a folder it hands
to the workers (``share``), and records each fill's exit status next to its
directory (``exit``); a worker's ``filled`` waits for that file.

Run as ``python -m tests.integration.prefill MODULE DATA`` it is that
subprocess.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.waiting import wait_until

# test module (its node id's file part) -> its importable name
FILLS = {
    "tests/integration/test_imap_sort_load.py": "tests.integration.test_imap_sort_load",
    "tests/integration/test_imap_context_load.py": "tests.integration.test_imap_context_load",
}
FILL_TIMEOUT = 1_800.0  # seconds: 100,000 messages derived on a loaded 2-core machine
ROOT = Path(__file__).resolve().parents[2]

_base: Path | None = None
_started: dict[str, tuple[subprocess.Popen, Path]] = {}
_shared: Path | None = None  # an xdist worker: the controller's folder of fills


def base() -> Path:
    """This session's folder of fills (made on first use)."""
    global _base
    if _base is None:
        _base = Path(tempfile.mkdtemp(prefix="mailyard-prefill-"))
    return _base


def share(folder: str) -> None:
    """Take the fills from the controller's ``folder`` (an xdist worker)."""
    global _shared
    _shared = Path(folder)


def _record_exit(proc: subprocess.Popen, data: Path) -> None:
    """Write the fill's exit status to ``exit`` beside its directory once it
    ends, for the workers waiting on it (written whole, then renamed)."""
    code = proc.wait()
    part = data.parent / "exit.part"
    try:
        part.write_text(str(code))
        part.rename(data.parent / "exit")
    except OSError:
        pass  # the session ended and removed the folder


def _spawn(module: str) -> tuple[subprocess.Popen, Path]:
    data = base() / module.rsplit(".", 1)[-1] / "data"
    data.parent.mkdir(parents=True)
    log = (data.parent / "fill.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.prefill", module, str(data)], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    threading.Thread(target=_record_exit, args=(proc, data), name=f"prefill-{module}", daemon=True).start()
    return proc, data


def start(nodeids: list[str]) -> None:
    """Start the fill of every FILLS module with a test among ``nodeids``."""
    wanted = {nodeid.split("::", 1)[0] for nodeid in nodeids}
    for path, module in FILLS.items():
        if path in wanted and module not in _started:
            _started[module] = _spawn(module)


def filled(module: str) -> Path:
    """The data directory ``module``'s fill made (started now if no test
    collection started it, as when the module is imported by hand)."""
    if module not in _started:
        _started[module] = _spawn(module)
    proc, data = _started[module]
    try:
        code = proc.wait(FILL_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the fill of {module} did not finish in {FILL_TIMEOUT:.0f} s") from None
    log = (data.parent / "fill.log").read_text(errors="replace")
    assert code == 0, f"the fill of {module} failed ({code}):\n{log[-3000:]}"
    return data


def _filled_by_controller(module: str, folder: Path) -> Path:
    """The data directory the xdist controller's fill of ``module`` made,
    once its exit status is recorded."""
    data = folder / module.rsplit(".", 1)[-1] / "data"
    status = data.parent / "exit"
    assert data.parent.is_dir(), f"the xdist controller started no fill of {module} in {folder}"
    wait_until(status.exists, FILL_TIMEOUT, f"the fill of {module} to finish", interval=0.5)
    code = int(status.read_text())
    log = (data.parent / "fill.log").read_text(errors="replace")
    assert code == 0, f"the fill of {module} failed ({code}):\n{log[-3000:]}"
    return data


def stop_all() -> None:
    """End fills still running (an interrupted session) and remove the directories."""
    global _base
    for proc, _data in _started.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _started.clear()
    if _base is not None:
        shutil.rmtree(_base, ignore_errors=True)
        _base = None


_ending = threading.Event()  # the session is gone: the watcher removes the folder and ends the process


def _kill_children() -> None:
    """Kill this process's children (Linux 3.5+: /proc/PID/task/TID/children)."""
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in children:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


def _end_with_parent(folder: Path) -> None:
    """End this process, removing ``folder``, once the test session that
    started it is gone: a session killed outright (SIGKILL, or SIGTERM from
    ``timeout``) runs no ``pytest_sessionfinish``, and the fill would go on
    for up to FILL_TIMEOUT on the machine's cores."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        _ending.set()
        _kill_children()  # a `mailyard init` under way would write on into the folder
        shutil.rmtree(folder, ignore_errors=True)
        try:
            folder.parent.rmdir()  # the session's folder of fills, once the last is gone
        except OSError:
            pass
        os._exit(1)

    threading.Thread(target=watch, name="prefill-parent-watch", daemon=True).start()


def main(module: str, data: str) -> None:
    from tests.integration.serve_process import init_data

    _end_with_parent(Path(data).parent)
    started = time.monotonic()
    try:
        init_data(Path(data))
        importlib.import_module(module)._fill(Path(data))
    except BaseException:
        if _ending.is_set():  # its session is gone and the work cut short: let the watcher finish
            time.sleep(60)
        raise
    print(f"{module}: filled in {time.monotonic() - started:.1f} s (pid {os.getpid()})")


if __name__ == "__main__":
    main(*sys.argv[1:])
