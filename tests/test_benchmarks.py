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


def _bench_scale():
    """benchmarks/bench_scale.py as a module (benchmarks/ is not a package; its trainable module sits beside it)."""
    import importlib.util

    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "benchmarks" / "bench_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(mode: str, store: str, size: int, wall: float, cpu: float, writes: int, mb: float) -> dict:
    return {"mode": mode, "store": store, "size": size, "finished": size, "epochs_run": 2 * size, "wall_s": wall,
            "driver_cpu_s": cpu, "peak_driver_mb": mb, "mlflow_writes": writes, "mlflow_reads": 0}


def test_bench_scale_figures_ratios_and_growth_exponents() -> None:
    """A real run takes minutes (a Ray start per driver); here the arithmetic and the report, from given rows."""
    bench = _bench_scale()
    runs = [_row("plain", "none", 100, 50.0, 5.0, 0, 700.0), _row("ours", "sqlite", 100, 55.0, 10.0, 2000, 800.0),
            _row("plain", "none", 1000, 400.0, 50.0, 0, 900.0), _row("ours", "sqlite", 1000, 520.0, 200.0, 20000, 1000.0)]
    summary = bench.summarise(runs)
    assert summary["ratios"] == [{"size": 100, "store": "sqlite", "wall": 1.1, "driver_cpu": 2.0},
                                 {"size": 1000, "store": "sqlite", "wall": 1.3, "driver_cpu": 4.0}]
    ours = next(e for e in summary["exponents"] if e["mode"] == "ours")
    assert (ours["from"], ours["to"]) == (100, 1000)
    assert ours["mlflow_writes"] == 1.0 and ours["driver_cpu_s"] == round(1 + __import__("math").log10(2), 3)
    assert not summary["ratio_target_met"] and not summary["exponent_target_met"]  # 1.3 > 1.2 and CPU grew as n^1.3
    args = __import__("argparse").Namespace(sleep_s=0.5)
    figures = bench.derived(runs[1], args)
    assert figures["theoretical_min_s"] == 200 * 0.5 / bench.SLOTS and figures["trials_per_s"] == round(100 / 55, 3)
    md = bench.markdown({"command": "c", "machine": "m", "when": "w", "epochs": 2, "sleep_s": 0.5, "note": "busy.",
                         "runs": [{**r, **bench.derived(r, args)} for r in runs], "summary": summary})
    assert "| 1000 | sqlite | 1.30 | 4.00 |" in md and "Target met: no." in md and "busy." in md


def test_bench_scale_render_rewrites_the_report_with_a_reading(tmp_path, monkeypatch) -> None:
    bench = _bench_scale()
    args = __import__("argparse").Namespace(sleep_s=0.5)
    runs = [{**r, **bench.derived(r, args)} for r in (_row("plain", "none", 100, 50.0, 5.0, 0, 700.0),
                                                       _row("ours", "sqlite", 100, 55.0, 10.0, 2000, 800.0))]
    (tmp_path / "scale.json").write_text(json.dumps({"command": "c", "machine": "m", "when": "w", "epochs": 2,
                                                     "sleep_s": 0.5, "note": "", "runs": runs}))
    (tmp_path / "reading.md").write_text("## Reading\n\nThe driver keeps up.\n")
    monkeypatch.setattr(sys, "argv", ["bench_scale.py", "--render", "--out", str(tmp_path), "--findings",
                                      str(tmp_path / "reading.md")])
    assert bench.main() == 0
    md = (tmp_path / "scale.md").read_text()
    assert "| 100 | sqlite | 1.10 | 2.00 |" in md and md.endswith("## Reading\n\nThe driver keeps up.\n")
    assert json.loads((tmp_path / "scale.json").read_text())["findings"] == ["## Reading", "", "The driver keeps up."]


def test_null_trainable_scores_a_config_the_same_every_time() -> None:
    _bench_scale()
    from scale_trainable import synthetic_f1

    config = {"lr": 10 ** -2.5, "gamma": 2.0}
    assert synthetic_f1(config, 3) == synthetic_f1(dict(config), 3)
    assert synthetic_f1(config, 4) > synthetic_f1(config, 1)  # a learning curve
    assert synthetic_f1(config, 4) > synthetic_f1({"lr": 1e-4, "gamma": 5.0}, 4)  # the space has a best region


def test_bench_vs_tutorial_ratio_is_the_median_of_pair_ratios_and_tiny_never_writes_over_the_real_report(
        tmp_path: Path) -> None:
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_vs_tutorial", ROOT / "benchmarks" / "bench_vs_tutorial.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    walls = [(90.0, 100.0), (120.0, 100.0), (80.0, 100.0)]  # pair ratios 0.9, 1.2, 0.8: median 0.9, not the mean
    runs = [{"side": side, "pair": i, "wall_s": wall, "driver_cpu_s": cpu, "tree_cpu_s": 1.0, "trials": 4, "epochs": 12,
             "where": {"fit_s": 1.0}} for i, pair in enumerate(walls)
            for side, wall, cpu in (("ours", pair[0], 20.0), ("peer", pair[1], 10.0))]
    args = argparse.Namespace(pairs=3, trials=4, epochs=3, image_size=64, tiny=False, out=tmp_path)
    report = bench.summarise(runs, {"train": 1}, args)
    assert report["wall_ratio"] == 0.9 and report["pair_ratios"] == [0.9, 1.2, 0.8]
    assert report["driver_cpu_ratio"] == 2.0
    bench.write(report, args)
    assert json.loads((tmp_path / "vs_tutorial.json").read_text())["wall_ratio"] == 0.9
    assert "**wall_ratio (ours / peer, median of pair ratios): 0.9**" in (tmp_path / "vs_tutorial.md").read_text()

    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_vs_tutorial.py"), "--tiny", "--out",
                           str(ROOT / "results" / "bench")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--tiny never writes over results/bench's files; give another --out" in proc.stderr
