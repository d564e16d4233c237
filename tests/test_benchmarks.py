"""benchmarks/bench_gpu.py: its tiny CPU run goes through every part and writes the report's JSON and markdown where
it is told. (The real figures come from one run on a GPU machine; here only the plumbing is checked.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_gpu_tiny_runs_every_part_and_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--tiny", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    figures = json.loads((out / "gpu.json").read_text())
    assert {"command", "tiny", "device", "torch", "torchvision", "targets", "wall_s", "parts", "summary"} <= set(figures)
    assert figures["tiny"] is True and figures["device"] == "cpu"
    parts = figures["parts"]
    assert set(parts) == {"loop_vs_bare", "captured_graph", "concurrent", "decode", "data_path"}
    assert not [name for name, part in parts.items() if "error" in part], parts

    cells = parts["loop_vs_bare"]["cells"]
    assert [(c["image_size"], c["batch_size"]) for c in cells] == [(16, 4), (16, 8)]
    for c in cells:
        assert {"steps", "images", "loop_images_per_s", "bare_images_per_s", "ratio", "meets_target"} <= set(c)
        assert c["loop_images_per_s"] > 0 and c["bare_images_per_s"] > 0 and c["ratio"] > 0

    assert parts["captured_graph"]["cells"] == []  # CUDA graphs: GPU only, and the report says so
    assert parts["captured_graph"]["skipped"] == [{"why": "CUDA graphs need a CUDA GPU"}]

    runs = parts["concurrent"]["runs"]
    assert [(r["processes"], r["mode"]) for r in runs] == [(1, "eager"), (2, "eager")]
    assert all(r["images_per_s"] > 0 and len(r["per_process"]) == r["processes"] for r in runs)
    assert runs[0]["over_one_eager_trial"] == 1.0

    decode = parts["decode"]["runs"]
    assert [r["workers"] for r in decode][0] == 1 and len(decode) == 2  # one worker, then every core
    assert all(r["files"] == 16 and r["skipped_files"] == 0 and r["files_per_s"] > 0 for r in decode)

    path = parts["data_path"]
    assert path["images"] == 16 and path["tensors_images_per_s"] > 0 and path["dataloader_images_per_s"] > 0
    assert path["ratio"] > 0

    summary = figures["summary"]
    assert {"loop_over_bare_min", "loop_meets_target_everywhere", "tensors_over_dataloader", "today_images_per_s_at_32px",
            "best_at_32px", "best_over_today_at_32px", "captured_over_eager_at_32px", "trials_per_gpu"} <= set(summary)
    assert summary["loop_over_bare_min"] == min(c["ratio"] for c in cells)
    share = summary["trials_per_gpu"]["16"]
    assert 0 < share["gpu_share"] and share["gpus_per_trial"] == round(1 / share["trials_per_gpu"], 3)

    md = (out / "gpu.md").read_text()
    assert md.startswith("# The study on one GPU") and "Tiny run on the CPU" in md
    for heading in ("## Targets", "## 1. The loop", "## 2. The whole step", "## 3. Concurrent", "## 4. Decoding",
                    "## 5. An epoch of decoded tensors", "## Trials per GPU"):
        assert heading in md
    assert not any(tmp_path.glob("results")), "the tiny run writes only under --out"
