"""``make fuzz``: run the atheris targets for a while, keep the new corpus
inputs, and report executions and coverage per target.

    python tests/fuzz/run.py [--seconds 60] [--target smtp|pop3|imap|message|all]

For each target (one after the other: the fuzzers are single-threaded):

1. libFuzzer runs ``fuzz_<target>.py`` for ``--seconds`` on a scratch corpus
   seeded from ``tests/fuzz/corpus/<target>/``; a crashing, failing or hanging
   input (``-timeout``) is written into that corpus folder as ``crash-*`` /
   ``timeout-*`` so it becomes a regression input the pytest replay runs.
2. ``-merge=1`` copies into the repository corpus only the new inputs that add
   coverage (libFuzzer's corpus minimisation), so the corpus stays small.
3. The merged corpus is replayed under coverage.py for line coverage of the
   target's own source files.

The figures (executions, exec/s, libFuzzer's ``cov:`` edge count and ``ft:``
features, corpus size, line coverage) are printed as a table and written to
``tests/fuzz/results/summary.json`` and ``summary.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = HERE / "results"

TARGETS = {
    # target: (max_len, source files whose line coverage is reported)
    "smtp": (4096, ["protocols/smtp/server.py", "protocols/smtp/data.py", "protocols/smtp/paths.py",
                    "protocols/smtp/params.py", "protocols/smtp/replies.py"]),
    "pop3": (2048, ["protocols/pop3/engine.py"]),
    "imap": (4096, ["protocols/imap/engine.py", "protocols/imap/framing.py", "protocols/imap/parser.py",
                    "protocols/imap/reader.py", "protocols/imap/search_parser.py",
                    "protocols/imap/fetch_parser.py", "protocols/imap/response.py",
                    "protocols/imap/fetch.py", "protocols/imap/search.py", "protocols/imap/selected.py",
                    "protocols/imap/names.py", "protocols/imap/utf7.py", "protocols/imap/session.py",
                    "protocols/imap/fetch_plan.py", "protocols/imap/flags.py",
                    "protocols/imap/handlers/auth.py", "protocols/imap/handlers/mailboxes.py",
                    "protocols/imap/handlers/selection.py", "protocols/imap/handlers/messages.py",
                    "protocols/imap/handlers/searching.py"]),
    "message": (8192, ["message/parse.py", "message/derived.py", "message/headers.py",
                       "message/address.py", "message/dates.py"]),
}


def _last(pattern: str, text: str) -> str | None:
    found = re.findall(pattern, text, re.M)
    return found[-1] if found else None


def line_coverage(target: str, corpus: pathlib.Path) -> dict[str, float] | None:
    """Replay ``corpus`` under coverage.py; percent of lines run per source file."""
    try:
        import coverage  # noqa: F401
    except ImportError:
        return None
    files = [str(ROOT / "src" / "mailyard" / f) for f in TARGETS[target][1]]
    script = (
        "import pathlib, sys\n"
        f"sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'src')!r}]\n"
        "import coverage\n"
        f"cov = coverage.Coverage(include={files!r}, data_file=None)\n"
        "cov.start()\n"
        "from tests.fuzz import harness\n"
        f"run = harness.RUNNERS[{target!r}]\n"
        f"for p in sorted(pathlib.Path({str(corpus)!r}).iterdir()):\n"
        "    try:\n"
        "        run(p.read_bytes())\n"
        "    except Exception:\n"
        "        pass\n"
        "cov.stop()\n"
        "import json\n"
        "out = {}\n"
        f"for f in {files!r}:\n"
        "    _, stmts, _, missing, _ = cov.analysis2(f)\n"
        "    out[f.split('/mailyard/')[1]] = [len(stmts), len(stmts) - len(missing)]\n"
        "print('COVJSON ' + json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    line = _last(r"^COVJSON (.*)$", proc.stdout)
    if line is None:
        print(proc.stderr[-2000:], file=sys.stderr)
        return None
    counts = json.loads(line)
    total = sum(s for s, _ in counts.values())
    run = sum(r for _, r in counts.values())
    result = {name: round(100 * r / s, 1) if s else 100.0 for name, (s, r) in counts.items()}
    result["total"] = round(100 * run / total, 1) if total else 100.0
    return result


def _env() -> dict[str, str]:
    """libFuzzer's -merge re-runs argv[0] (the fuzz_*.py script, whose shebang
    is ``env python3``): put this interpreter's folder first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def fuzz_one(target: str, seconds: int, rss_mb: int) -> dict:
    max_len, _ = TARGETS[target]
    corpus = HERE / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    script = HERE / f"fuzz_{target}.py"
    dictionary = HERE / "dicts" / f"{target}.dict"
    before = len(list(corpus.iterdir()))
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=f"mailyard-fuzz-{target}-"))
    args = [
        sys.executable, str(script), str(scratch), str(corpus),
        f"-max_total_time={seconds}", f"-max_len={max_len}", f"-rss_limit_mb={rss_mb}",
        "-timeout=10", "-print_final_stats=1", f"-artifact_prefix={corpus}/",
    ]
    if dictionary.exists():
        args.append(f"-dict={dictionary}")
    print(f"== fuzz {target} for {seconds}s (max_len {max_len}) ==", flush=True)
    started = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=_env())
    elapsed = time.monotonic() - started
    log = proc.stdout + proc.stderr
    (RESULTS / f"{target}.log").write_text(log[-200_000:])
    progress = re.findall(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+)", log, re.M)
    status = progress[-1] if progress else None
    execs = _last(r"^stat::number_of_executed_units:\s+(\d+)", log)
    rate = _last(r"^stat::average_exec_per_sec:\s+(\d+)", log)
    crashed = proc.returncode != 0
    if not crashed:
        # keep only new inputs that add coverage
        subprocess.run([sys.executable, str(script), "-merge=1", f"-max_len={max_len}",
                        f"-rss_limit_mb={rss_mb}", str(corpus), str(scratch)],
                       capture_output=True, text=True, cwd=ROOT, env=_env())
    shutil.rmtree(scratch, ignore_errors=True)
    after = len(list(corpus.iterdir()))
    result = {
        "target": target,
        "seconds": round(elapsed, 1),
        "executions": int(execs) if execs else (int(status[0]) if status else None),
        "exec_per_sec": int(rate) if rate else None,
        "cov_edges": int(status[1]) if status else None,
        "features": int(status[2]) if status else None,
        "corpus_before": before,
        "corpus_after": after,
        "crashed": crashed,
        "line_coverage": line_coverage(target, corpus),
    }
    if crashed:
        tail = "\n".join(log.splitlines()[-40:])
        print(f"!! {target}: the fuzzer stopped with an error; input saved in {corpus}/\n{tail}")
    return result


def write_summary(results: list[dict]) -> None:
    path = RESULTS / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    for r in results:
        summary[r["target"]] = r
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    rows = ["| target | seconds | executions | exec/s | cov (edges) | ft | corpus | line cov. | result |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for t in TARGETS:
        r = summary.get(t)
        if r is None:
            continue
        lc = r.get("line_coverage") or {}
        rows.append(
            f"| {t} | {r['seconds']} | {r['executions']} | {r['exec_per_sec']} | {r['cov_edges']} | "
            f"{r['features']} | {r['corpus_before']} -> {r['corpus_after']} | "
            f"{lc.get('total', '?')}% | {'FAILED' if r['crashed'] else 'ok'} |"
        )
    table = "\n".join(rows)
    (RESULTS / "summary.md").write_text(
        "# Last `make fuzz` results\n\nWritten by tests/fuzz/run.py. cov = libFuzzer edge "
        "coverage of the instrumented code; line cov. = coverage.py over the target's own "
        "source files when the merged corpus is replayed.\n\n" + table + "\n"
    )
    print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "60")))
    parser.add_argument("--target", default=os.environ.get("FUZZ_TARGET", "all"),
                        choices=[*TARGETS, "all"])
    parser.add_argument("--rss-limit-mb", type=int, default=2048)
    opts = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    targets = list(TARGETS) if opts.target == "all" else [opts.target]
    results = [fuzz_one(t, opts.seconds, opts.rss_limit_mb) for t in targets]
    write_summary(results)
    return 1 if any(r["crashed"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
