"""Shared entry point of the atheris targets (fuzz_smtp.py, fuzz_pop3.py, ...).

Imports the code under test inside ``atheris.instrument_imports`` so libFuzzer
gets coverage feedback from it, then runs the target's driver from
harness.py on every input. Command-line arguments are libFuzzer's
(corpus folders, -max_total_time=, -max_len=, ...); ``make fuzz`` passes them.
"""

from __future__ import annotations

import importlib
import pathlib
import sys
from collections.abc import Sequence

ROOT = pathlib.Path(__file__).resolve().parents[2]


def main(target: str, modules: Sequence[str], include: Sequence[str] = ("mailyard",)) -> None:
    import atheris

    sys.path.insert(0, str(ROOT))
    sys.path.insert(1, str(ROOT / "src"))
    with atheris.instrument_imports(include=list(include)):
        for name in modules:
            importlib.import_module(name)
    from tests.fuzz import harness

    run = harness.RUNNERS[target]

    def test_one_input(data: bytes) -> None:
        run(data)

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
