"""Run the benchmarks, print a table, write bench/results.json.

Usage: python -m bench [smtp] [pop3] [imap] ...   (default: all)
       python -m bench imap-load [--clients 10 50] ...   (its own options: --help)

``scale`` builds a store with an account of 1,000,000 messages (minutes);
``--sizes 10000,100000`` for a quicker run, ``--scale-data DIR`` keeps the
built data directories for the next run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

from .common import Result, cpu_count

BENCHES = ["smtp", "pop3", "imap", "imap-load", "sort", "web", "index", "outbound", "limits", "quota", "mailauth", "spam", "sieve",
           "scale", "idle", "backup", "import", "pg"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["imap-load"] and len(argv) > 1:
        from .imap_load import main as load_main  # its own options

        return load_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(BENCHES)})")
    parser.add_argument("--quick", action="store_true", help="smaller workloads, for a smoke run")
    parser.add_argument("--sizes", help="scale: messages in the big account, comma-separated "
                        "(default: 10000,100000,1000000)")
    parser.add_argument("--scale-data", metavar="DIR", help="scale: keep the built data directories here "
                        "and reuse them in later runs (default: a temporary directory)")
    parser.add_argument("--text-index", action="store_true", help="scale: build the full-text index too (slower)")
    parser.add_argument("--output", default=str(Path(__file__).with_name("results.json")))
    args = parser.parse_args(argv)
    names = args.names or BENCHES
    results: list[Result] = []
    for name in names:
        try:
            # "import" is a keyword: its module is bench/import_.py
            module = importlib.import_module(f"bench.{name.replace('-', '_')}" + ("_" if name == "import" else ""))
        except ModuleNotFoundError:
            print(f"[{name}] not built yet, skipped", file=sys.stderr)
            continue
        print(f"[{name}] running...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        if name == "scale":
            sizes = tuple(int(x) for x in args.sizes.split(",")) if args.sizes else None
            results.extend(module.run(quick=args.quick, sizes=sizes, data_root=args.scale_data,
                                      text_index=args.text_index))
        else:
            results.extend(module.run(quick=args.quick))
        print(f"[{name}] done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    width = max([len(r.name) for r in results] + [10])
    print()
    print(f"{'bench':<6} {'figure':<{width}} {'value':>12} {'unit':<10} reference")
    print("-" * (width + 50))
    for r in results:
        print(f"{r.bench:<6} {r.name:<{width}} {r.value:>12.3f} {r.unit:<10} {r.reference}")
    doc = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "results": [asdict(r) for r in results],
    }
    Path(args.output).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
