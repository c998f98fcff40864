"""The spread of the learning tests: rerun them over seeds and CPU kernel paths, then print each metric's observed
minimum / median / maximum beside its bar.

Short training runs drift apart when a CPU rounds differently, so a bar must sit well outside what seeds and kernels
do to a metric. The kernel paths stand in for other CPUs on one machine: ATen's vectorised kernels
(``ATEN_CPU_CAPABILITY``) and oneDNN's convolutions (``ONEDNN_MAX_CPU_ISA``) capped at an older instruction set.

    python tests/spread.py --seeds 0 1 2 3 4 --paths native default avx2 --threads 1 2
    python tests/spread.py -m "learning and slow" --seeds 0 1 --jobs 2 --threads 1   # the slow ones
    python tests/spread.py --table spread.jsonl          # the table of an earlier run's log

A run appends to its log (``--log``), so a grid can be measured in parts and tabled at once.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# The environment of each kernel path. "avx2-cpu" caps both libraries, as on a CPU without AVX-512.
KERNEL_PATHS = {
    "native": {},
    "default": {"ATEN_CPU_CAPABILITY": "default"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "onednn-avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "onednn-avx512": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "avx2-cpu": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}


def run_one(seed: int, path: str, threads: int, log: Path, marker: str, select: str) -> tuple[str, int]:
    """One pytest run of the learning tests; its measurements land in ``log`` tagged with the path and threads."""
    part = log.with_suffix(f".{seed}.{path}.{threads}.part")
    part.unlink(missing_ok=True)
    env = {
        **os.environ,
        **KERNEL_PATHS[path],
        "OMP_NUM_THREADS": str(threads),
        "MNET_LEARNING_SEED": str(seed),
        "MNET_LEARNING_LOG": str(part),
        "HF_HUB_OFFLINE": "1",
    }
    command = [sys.executable, "-m", "pytest", str(TESTS), "-m", marker, "-q", "-p", "no:cacheprovider", "-n", "0"]
    if select:
        command += ["-k", select]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    rows = [json.loads(line) for line in part.read_text().splitlines()] if part.exists() else []
    part.unlink(missing_ok=True)
    with open(log, "a") as file:
        for row in rows:
            file.write(json.dumps({**row, "path": path, "threads": threads}) + "\n")
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-300:]
    return f"seed {seed}, {path}, {threads} thread(s): {summary}", result.returncode


def table(log: Path) -> str:
    """Markdown: one row per test and metric, over every run in ``log``."""
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    bars: dict[tuple[str, str], str] = {}
    runs: dict[tuple[str, str], set] = defaultdict(set)
    for line in log.read_text().splitlines():
        row = json.loads(line)
        key = (row["test"], row["metric"])
        values[key].append(row["value"])
        bars[key] = f">= {row['at_least']:g}" if row["at_least"] is not None else f"<= {row['at_most']:g}"
        runs[key].add((row["seed"], row["path"], row["threads"]))
    lines = [
        "| test | metric | runs | min | median | max | bar |",
        "|---|---|---|---|---|---|---|",
    ]
    for (test, metric), measured in sorted(values.items()):
        lines.append(
            f"| {test} | {metric} | {len(runs[test, metric])} | {min(measured):.3f} | "
            f"{statistics.median(measured):.3f} | {max(measured):.3f} | {bars[test, metric]} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--paths", nargs="+", default=["native"], choices=sorted(KERNEL_PATHS))
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("-m", dest="marker", default="learning and not slow", help="pytest -m: which tests")
    parser.add_argument("-k", dest="select", default="", help="pytest -k: which learning tests")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (e.g. 2 single-thread runs on 2 cores)")
    parser.add_argument("--log", type=Path, default=Path("spread.jsonl"))
    parser.add_argument("--table", type=Path, help="print the table of this log and run nothing")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.table))
        return 0
    grid = list(itertools.product(args.seeds, args.paths, args.threads))
    failures = 0
    with ThreadPoolExecutor(args.jobs) as pool:
        for summary, code in pool.map(lambda job: run_one(*job, args.log.resolve(), args.marker, args.select), grid):
            print(summary, flush=True)
            failures += code != 0
    print(f"\n{failures} of {len(grid)} runs had a failing test\n")
    print(table(args.log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
