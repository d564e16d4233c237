"""python -m study.predict: a registered model predicts a folder of PNGs into a CSV; bad input is one line, exit 2."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from study import store
from study.predict import main
from study.publish import log_model, register

SIZE = 16
TEMPERATURE = 2.0
COSTS = [[0, 10], [1, 0]]  # a missed cat costs 10: least expected cost says cat when p_cat >= 1/11
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny grey 2-class network leaning to 'dog' (bias 3: p_cat near 0.05 at T=1, near 0.18 at T=2), registered
    as 'core-ce', and a folder of images: two RGB PNGs, a grey one, a corrupt one and a text file."""
    tmp = tmp_path_factory.mktemp("predict")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    run_id = store.open_run(uri, "core", "ce-confirm", {"approach": "ce"}, artifact_root=tmp / "mlartifacts")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        net[-1].bias.copy_(torch.tensor([0.0, 3.0]))
    log_model(uri, run_id, net, classes=["cat", "dog"], image_size=SIZE, channels=1, minority=0, eval_costs=COSTS,
              temperature=TEMPERATURE, config={"approach": "ce"})
    register(uri, run_id, "core-ce")
    rng = np.random.default_rng(0)
    (tmp / "imgs" / "a").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp / "imgs" / "b.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp / "imgs" / "a" / "c.png")
    Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8)).save(tmp / "imgs" / "a" / "grey.png")
    (tmp / "imgs" / "broken.png").write_bytes(b"not a png")
    (tmp / "imgs" / "notes.txt").write_text("not an image")
    return {"uri": uri, "net": net.eval(), "tmp": tmp}


def expected(net: torch.nn.Module, path: Path) -> list[float]:
    """p(cat), p(dog) as the study would see ``path``: PIL's RGB, bilinear resize, PIL's grey; softmax(z / T)."""
    with Image.open(path) as img:
        grey = img.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR).convert("L")
    x = torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255).view(1, 1, SIZE, SIZE)
    with torch.no_grad():
        return (net(x.expand(-1, 3, -1, -1)) / TEMPERATURE).softmax(1)[0].tolist()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def check_rows(rows: list[dict[str, str]], net: torch.nn.Module, root: Path) -> None:
    for row in rows:
        p_cat, p_dog = expected(net, root / row["path"])
        assert float(row["p_cat"]) == pytest.approx(p_cat, abs=2e-6)
        assert float(row["p_dog"]) == pytest.approx(p_dog, abs=2e-6)
        assert row["predicted"] == ("cat" if p_cat > p_dog else "dog")
        assert row["min_cost"] == ("cat" if p_cat >= 1 / 11 else "dog")


def test_a_folder_is_predicted_into_a_csv(served: dict) -> None:
    tmp = served["tmp"]
    proc = subprocess.run([sys.executable, "-m", "study.predict", "--model", "models:/core-ce/1", "--tracking-uri",
                           served["uri"], "--out", "out/predictions.csv", "imgs"], cwd=tmp, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "wrote 3 predictions to out/predictions.csv (1 unreadable skipped)\n"
    assert proc.stderr == "warning: skipped imgs/broken.png: not a readable image\n"
    with (tmp / "out" / "predictions.csv").open(newline="") as f:
        assert next(csv.reader(f)) == ["path", "predicted", "p_cat", "p_dog", "min_cost"]
    rows = read_csv(tmp / "out" / "predictions.csv")
    assert [r["path"] for r in rows] == ["imgs/a/c.png", "imgs/a/grey.png", "imgs/b.png"]
    check_rows(rows, served["net"], tmp)
    # the temperature decides: at T=1 p_cat < 1/11 (dog is cheaper), at T=2 p_cat >= 1/11 (cat is)
    assert {r["predicted"] for r in rows} == {"dog"} and {r["min_cost"] for r in rows} == {"cat"}


def test_one_image(served: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    image = served["tmp"] / "imgs" / "a" / "grey.png"
    monkeypatch.chdir(tmp_path)
    assert main(["--model", "models:/core-ce/1", "--tracking-uri", served["uri"], str(image)]) == 0
    rows = read_csv(tmp_path / "predictions.csv")  # the default --out
    assert [r["path"] for r in rows] == [str(image)]
    check_rows(rows, served["net"], Path("/"))
    assert capsys.readouterr().err == ""


NO_MODEL = "the following arguments are required: --model"
SUFFIXES = r"\(\.bmp, \.gif, \.jpeg, \.jpg, \.png, \.tif, \.tiff, \.webp\)"


@pytest.mark.parametrize(("change", "message"), [
    ({"--model": None}, NO_MODEL),
    ({"--model": "core-ce/1"}, r"--model 'core-ce/1': use models:/<name>/<version> \(or runs:/<run_id>/model\)"),
    ({"--model": "models:/"}, r"--model 'models:/': use models:/<name>/<version> \(or runs:/<run_id>/model\)"),
    ({"--model": "models:/nope/1"}, r"--model models:/nope/1: Registered Model with name=nope not found"),
    ({"--verbose": True}, r"unrecognized arguments: --verbose"),
    ({"--out": "{tmp}/folder"}, r"--out {tmp}/folder: {tmp}/folder is a folder, not a regular file: refused"),
    ({"--out": "{tmp}/fifo"}, r"--out {tmp}/fifo: {tmp}/fifo is a FIFO, not a regular file: refused"),
    ({"--out": "{tmp}/p.csv/x.csv"}, r"--out {tmp}/p.csv/x.csv: {tmp}/p.csv is not a folder"),
    ({"input": "{tmp}/folder"}, rf"{{tmp}}/folder: no image files under it {SUFFIXES}"),
    ({"input": "{tmp}/missing"}, r"{tmp}/missing: No such file or directory"),
    ({"input": "{tmp}/fifo"}, r"{tmp}/fifo: a FIFO, not an image or a folder"),
    ({"input": "{imgs}/broken.png"}, r"{imgs}/broken.png: no readable image \(1 unreadable\)"),
    ({"--tracking-uri": "sqlite:///{tmp}/none.db"},
     r"--tracking-uri sqlite:///{tmp}/none.db: no MLflow tracking store there \(the file does not exist\)"),
    ({"--tracking-uri": "file:///{tmp}"}, r"unsupported tracking URI 'file:///{tmp}': use sqlite:///path.db or "
                                          r"http\(s\)://host:port"),
])
def test_bad_input_is_one_line_and_exit_2(served: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys,
                                          change: dict, message: str) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("no image here")
    (tmp_path / "p.csv").write_text("an existing file")
    os.mkfifo(tmp_path / "fifo")
    fill = {"tmp": str(tmp_path), "imgs": str(served["tmp"] / "imgs")}
    flags = {"--model": "models:/core-ce/1", "--tracking-uri": served["uri"], "--out": "{tmp}/out.csv",
             "input": "{imgs}", **change}
    argv = [part for flag, value in flags.items() if value is not None and flag != "input"
            for part in ((flag,) if value is True else (flag, value.format(**fill)))] + [flags["input"].format(**fill)]
    before = sorted(tmp_path.rglob("*"))
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert re.fullmatch(message.replace("{tmp}", re.escape(fill["tmp"])).replace("{imgs}", re.escape(fill["imgs"])),
                        err[len("error: "):-1]), err
    assert sorted(tmp_path.rglob("*")) == before, "a refused command wrote something"
    assert (tmp_path / "p.csv").read_text() == "an existing file"


def test_flags_are_checked_before_torch_and_mlflow_load() -> None:
    code = ("import sys; from study.predict import main; rc = main(['--model', 'x', 'imgs']); "
            "print(rc, [m for m in ('torch', 'mlflow') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.stdout == "2 []\n", proc.stderr
    assert proc.stderr == "error: --model 'x': use models:/<name>/<version> (or runs:/<run_id>/model)\n"
