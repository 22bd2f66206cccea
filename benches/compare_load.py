"""The load benchmark at N = 200 on two builds, alternately, in one table (issue 12's before/after).

    python benches/compare_load.py /work/wt-before /work/wt-lag --runs 3 --duration 30

Each argument is a worktree with its own `.venv` (or a venv's directory, or its python); that
interpreter runs the gateway, while this interpreter runs the tester, the CSMS and the PCS stub
for both (benches/load.py --gateway-python), so only the gateway differs between the columns.
Runs alternate A, B, A, B, ... so a machine that gets busier or quieter over time shifts both
alike. Every run is `benches/load.py --endpoints N --no-baseline --json ...` with the metrics
server on; its full output goes to the log directory printed at the start.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent


def gateway_python(path: Path) -> Path:
    """A worktree (its .venv), a venv directory, or an interpreter."""
    for candidate in (path / ".venv" / "bin" / "python", path / "bin" / "python", path):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"{path}: no .venv/bin/python, bin/python, nor an interpreter")


def run(python: Path, n: int, duration: float, out: Path, log: Path) -> dict[str, Any] | None:
    cmd = [sys.executable, str(HERE / "load.py"), "--endpoints", str(n), "--duration",
           str(duration), "--no-baseline", "--gateway-python", str(python), "--json", str(out)]
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False)
    if not out.exists():
        print(f"  run failed (exit {proc.returncode}), see {log}", flush=True)
        return None
    rows: list[dict[str, Any]] = orjson.loads(out.read_bytes())
    return rows[0]


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def lag_cells(row: dict[str, Any]) -> str:
    lag = row.get("lag")
    if not lag:
        return "- | - | -"
    bound = "<=" if lag["max_bound"] else ""
    return f"{lag['p50_ms']:.2f} | {lag['p99_ms']:.2f} | {bound}{lag['max_ms']:.1f}"


def line(name: str, i: int | str, row: dict[str, Any]) -> str:
    return (f"| {name} | {i} | {fmt(row['cmd_p50_ms'])} | {fmt(row['cmd_p99_ms'])} | "
            f"{lag_cells(row)} | {fmt(row['cpu_per_1000'], 3)} | "
            f"{fmt(row['cpu_control_pct'])} | {fmt(row['jitter_p99_ms'], 2)} | {row['errors']} |")


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per column, the median over the runs (of the runs' own p50/p99, not a pooled one)."""
    def med(key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return statistics.median(values) if values else None

    lags = [r["lag"] for r in rows if r.get("lag")]
    top = max(lags, key=lambda x: x["max_ms"]) if lags else None  # a max, not a median
    return {
        "cmd_p50_ms": med("cmd_p50_ms"), "cmd_p99_ms": med("cmd_p99_ms"),
        "cpu_per_1000": med("cpu_per_1000"), "cpu_control_pct": med("cpu_control_pct"),
        "jitter_p99_ms": med("jitter_p99_ms"), "errors": sum(r["errors"] for r in rows),
        "lag": None if top is None else {
            "p50_ms": statistics.median(x["p50_ms"] for x in lags),
            "p99_ms": statistics.median(x["p99_ms"] for x in lags),
            "max_ms": top["max_ms"], "max_bound": top["max_bound"]},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="first build (e.g. the before worktree)")
    ap.add_argument("b", type=Path, help="second build")
    ap.add_argument("--runs", type=int, default=3, help="runs per build (alternating)")
    ap.add_argument("--endpoints", type=int, default=200)
    ap.add_argument("--duration", type=float, default=30.0, help="measured seconds per run")
    args = ap.parse_args(argv)
    names = [args.a.name or str(args.a), args.b.name or str(args.b)]
    if names[0] == names[1]:
        names = ["A", "B"]
    builds = list(zip(names, (gateway_python(args.a), gateway_python(args.b)), strict=True))
    logs = Path(tempfile.mkdtemp(prefix="bess-compare-"))
    print(f"logs in {logs}", flush=True)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in builds}
    for i in range(1, args.runs + 1):
        for name, python in builds:
            print(f"run {i}/{args.runs}: {name} ({python})", flush=True)
            row = run(python, args.endpoints, args.duration, logs / f"{name}-{i}.json",
                      logs / f"{name}-{i}.log")
            if row is not None:
                results[name].append(row)
    print(f"\nN = {args.endpoints}, {args.duration:g} s measured per run; lag p50/p99 "
          "interpolated within the histogram's buckets; max '<=' is a bucket's upper bound "
          "(benches/load.py)\n")
    print("| build | run | cmd->PCS p50 ms | cmd->PCS p99 ms | lag p50 ms | lag p99 ms | "
          "lag max ms | CPU s per 1000 msg | control thread CPU % | jitter p99 ms | errors |")
    print("|" + "---|" * 11)
    # the median row: each column's median over the runs (max lag: the largest of them)
    for name, _ in builds:
        for i, row in enumerate(results[name], 1):
            print(line(name, i, row))
    for name, _ in builds:
        if results[name]:
            print(line(name, "median", median_row(results[name])))
    failed = sum(args.runs - len(rows) for rows in results.values())
    errors = sum(r["errors"] for rows in results.values() for r in rows)
    return 1 if failed or errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
