"""Multiprocess metrics (mailyard/metrics.py): each process writes its own
values file, a forked child (a worker) its own and not its parent's, the
scrape sums them all; and an increment asks the kernel nothing (no
getpid() per increment: the module keeps the process id, renewed at fork).

Run in a subprocess: multiprocess mode changes prometheus_client's global
value class, which the other tests of this process must not see.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path

    # counted from before prometheus_client is imported: its default process
    # identifier is os.getpid as it is at import
    calls = 0
    real = os.getpid

    def counting() -> int:
        global calls
        calls += 1
        return real()

    os.getpid = counting
    from mailyard import metrics

    directory = Path(sys.argv[1])
    metrics.enable_multiprocess(directory)
    metrics.count_connection("smtp")
    calls = 0
    for _ in range(1000):
        metrics.count_connection("smtp")
        metrics.observe_delivery("local", 0.2)
    counted = calls
    os.getpid = real
    child = os.fork()
    if child == 0:
        metrics.count_connection("smtp")
        metrics.count_connection("imap")
        os._exit(0)
    os.waitpid(child, 0)
    text = metrics.exposition(metrics.Snapshot()).decode()
    print(json.dumps({"calls": counted, "parent": os.getpid(), "child": child,
                      "files": sorted(p.name for p in directory.iterdir()), "text": text}))
""")


def _value(text: str, name: str, service: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{service="{service}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} for {service} in the scrape")


def test_each_process_counts_in_its_own_file_and_no_increment_asks_the_kernel(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "metrics")], capture_output=True,
                         text=True, timeout=60, check=True)
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["calls"] == 0, "getpid() called per increment"
    assert f"counter_{result['child']}.db" in result["files"]
    assert f"counter_{result['parent']}.db" in result["files"]
    text = result["text"]
    assert _value(text, "mailyard_connections_total", "smtp") == 1002  # parent 1 + 1000, child 1
    assert _value(text, "mailyard_connections_total", "imap") == 1
