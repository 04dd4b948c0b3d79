"""bench/gpu_suite.py's CPU fallback: the same code the GPU run takes, at tiny sizes.

The suite must run clean on the first try on a GPU machine, so every part (timing,
memory, the concurrent compare) runs here for real; only the host-sync check needs
CUDA and says it was skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SUITE = Path(__file__).resolve().parents[1] / "bench" / "gpu_suite.py"


def test_the_cpu_fallback_runs_every_part_and_writes_the_table_and_json(tmp_path):
    out = tmp_path / "suite.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SUITE), "--json", str(out)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["cuda"] is False and "CPU fallback" in report["device"]
    rows = report["rows"]
    assert [r for r in rows if r["verdict"] == "error"] == []
    parts = {r["part"] for r in rows}
    assert parts == {"host sync", "overhead", "memory", "compare"}
    sync = next(r for r in rows if r["part"] == "host sync")
    assert sync["verdict"] == "skipped" and "no CUDA" in sync["numbers"]["reason"]
    overhead = [r for r in rows if r["part"] == "overhead"]
    assert {(r["model"], r["measure"].split()[0]) for r in overhead} == {
        ("reference MLP", "default"), ("reference MLP", "every"),
        ("ResNet-18-style CNN", "default"), ("ResNet-18-style CNN", "every")}
    for r in overhead:
        assert r["numbers"]["ratio"] > 0 and len(r["numbers"]["ratios"]) >= 2
    for r in (r for r in rows if r["part"] == "memory"):
        assert r["numbers"]["params"] > 0 and r["numbers"]["snapshot_bytes"] > 0
    compare = next(r for r in rows if r["part"] == "compare")
    assert compare["numbers"]["seconds"] > 0
    assert "--jobs 2" in compare["numbers"]["command"]
    assert set(compare["numbers"]["variant_seconds"]) == {"relu"}
    # One markdown table on stdout, a row per measurement.
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| part | model | measure | value | target | verdict |")
    assert len(table) == 1 + len(rows)
