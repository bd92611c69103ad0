"""Grading time of a class: `minigen assign grade` on 1 and on 2 local workers (Dask LocalCluster),
in the bubblewrap sandbox and without it (--no-sandbox): the sandbox's cost, on the same machine.

    python benchmarks/grading.py [--students 40] [--topics optim,autograd] [--workers 1,2]
                                 [--sandbox on,off] [--rounds 1]

Makes a class of made-up submissions (a third correct, a third with a wrong line, a third left
blank), then grades it with each worker count, each grading a fresh `minigen assign grade` process
writing a fresh gradebook, alternating the order over rounds. Reports the median wall time per
worker count, the cost of one submission (the median of the gradebook's per-submission seconds:
the grading process from start to end) and the fixed start-up (cluster, collecting the reference).

The time on a cluster is arithmetic from those numbers, not a measurement:
    T(W workers) ~ start-up + ceil(students / W) x cost of one submission
(it assumes workers as fast as this machine's cores, one core per worker, and a class larger than W).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from minigen.tools import assign  # noqa: E402


def make_class(folder: str, students: int, topics: list[str]) -> None:
    """students copies: correct, wrong (one solution line changed to something plausible but wrong), blank."""
    blank = assign.make(topics, os.path.join(folder, ".blank"))
    solutions = [s for s in assign.all_solutions() if s.topic in topics]
    for i in range(students):
        copy = os.path.join(folder, "class", f"student{i:03d}")
        shutil.copytree(blank, copy)
        kind = ("correct", "wrong", "blank")[i % 3]
        for path in sorted({s.path for s in solutions}) if kind != "blank" else []:
            with open(os.path.join(ROOT, path), encoding="utf-8") as f:
                text = assign.strip_solutions(f.read(), [], path)
            if kind == "wrong":
                text = text.replace(" * ", " + ", 1)      # the first product of the file becomes a sum
            with open(os.path.join(copy, path), "w", encoding="utf-8") as f:
                f.write(text)


def grade_once(folder: str, topics: list[str], workers: int, sandbox: str, timeout: float) -> dict:
    book = os.path.join(folder, f"book-{workers}-{sandbox}-{time.monotonic_ns()}.csv")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "minigen", "assign", "grade", os.path.join(folder, "class"), "--out", book,
                    "--topics", ",".join(topics), "--workers", str(workers), "--timeout", str(timeout)]
                   + (["--no-sandbox"] if sandbox == "off" else []), check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    with open(book, newline="") as f:
        rows = list(csv.DictReader(f))
    seconds = [float(r["seconds"]) for r in rows]
    return {"wall_seconds": wall, "submission_seconds": statistics.median(seconds),
            "statuses": sorted({r["status"] for r in rows})}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--topics", default="optim,autograd")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--sandbox", default="on,off", help="on, off or both: graded in bwrap or with --no-sandbox")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "grading.json"))
    args = parser.parse_args(argv)
    topics = assign.parse_topics(args.topics)
    configs = [(int(w), mode) for w in args.workers.split(",") for mode in args.sandbox.split(",")]
    runs: dict[tuple, list[dict]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="minigen-grading-bench-") as folder:
        make_class(folder, args.students, topics)
        for r in range(args.rounds):
            for w, mode in configs if r % 2 == 0 else reversed(configs):      # alternate the order: drift hits all
                runs[w, mode].append(grade_once(folder, topics, w, mode, args.timeout))
                print(f"round {r + 1}, {w} worker(s), sandbox {mode}: {runs[w, mode][-1]['wall_seconds']:.1f} s",
                      flush=True)
    results = {"students": args.students, "topics": topics, "rounds": args.rounds, "cpus": os.cpu_count(),
               "by_config": {}}
    for (w, mode), measured in runs.items():
        wall = statistics.median(m["wall_seconds"] for m in measured)
        cost = statistics.median(m["submission_seconds"] for m in measured)
        startup = max(0.0, wall - math.ceil(args.students / w) * cost)
        results["by_config"][f"{w} worker(s), sandbox {mode}"] = {
            "workers": w, "sandbox": mode, "wall_seconds": wall, "submission_seconds": cost,
            "startup_seconds": startup, "statuses": measured[0]["statuses"]}
        print(f"{w} worker(s), sandbox {mode}: {wall:.1f} s for {args.students} submissions "
              f"({wall / args.students:.2f} s each on average; one submission's grading process: {cost:.2f} s)")
    one = next(iter(results["by_config"].values()))
    print("on a cluster (arithmetic, not measured): T(W) ~ "
          f"{one['startup_seconds']:.0f} s + ceil({args.students} / W) x {one['submission_seconds']:.2f} s, "
          f"e.g. W=20: {one['startup_seconds'] + math.ceil(args.students / 20) * one['submission_seconds']:.0f} s")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
