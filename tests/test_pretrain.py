"""``python -m study.pretrain``: a smoke run writes a safe checkpoint the transfer approach can start from;
bad arguments exit with code 2. Everything runs in tmp_path (the CLI writes relative to the working directory)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from study import paths, pretrain
from study.data import ANIMALS
from study.errors import UsageError
from study.models import build_model, load_state_dict, source_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCE_CLASSES = [a for a in ANIMALS if a not in ("cat", "dog")]


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_smoke_cli_writes_a_weights_only_checkpoint(workdir: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "study.pretrain", "--smoke", "--epochs", "1", "--image-size", "16"],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    path = workdir / "results" / "checkpoints" / "source_resnet18_16px_smoke.pt"  # source_checkpoint(16, smoke=True)
    assert proc.stdout.startswith("saved results/checkpoints/source_resnet18_16px_smoke.pt: source-task validation accuracy")
    assert "pretraining on the animals source task" in proc.stderr  # the progress bar
    estimate = re.search(r"pretraining 1 epoch\(s\) of (\d+) images at 16 px on cpu: about (\d+) s \(([\d.]+) ms per image "
                         r"over (\d+) timed images\)", proc.stderr)
    assert estimate, proc.stderr[-2000:]  # printed before training starts, from a few timed batches
    assert int(estimate[1]) == 8 * 40 and int(estimate[4]) == 3 * 64 and float(estimate[3]) > 0
    blob = torch.load(path, weights_only=True)
    assert blob["classes"] == SOURCE_CLASSES and blob["image_size"] == 16 and blob["epochs"] == 1
    assert 0 <= blob["val_accuracy"] <= 1 and 0 <= blob["val_macro_f1"] <= 1
    assert blob["state_dict"]["net.fc.weight"].shape == (8, 512)
    assert {p.name for p in (workdir / "results").iterdir()} == {"checkpoints", "cache"}  # all under the working directory
    # the transfer approach starts from it: backbone restored, a fresh 2-class head
    state = load_state_dict(path)
    net = build_model(2, "pretrained", "source", state=state)
    got = net.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items() if not k.startswith("net.fc."))
    assert net.net.fc.out_features == 2


def test_checkpoint_at_the_default_source_path_is_what_source_weights_load(workdir: Path, capsys) -> None:
    out = source_checkpoint(32)  # results/checkpoints/source_resnet18_32px.pt under tmp_path
    assert pretrain.main(["--smoke", "--epochs", "1", "--out", str(out), "--seed", "2"]) == 0
    assert capsys.readouterr().out.startswith(f"saved {out}:")
    saved = torch.load(workdir / out, weights_only=True)["state_dict"]
    net = build_model(2, "pretrained", "source", freeze="layer3")
    got = net.state_dict()
    assert all(torch.equal(got[k], v) for k, v in saved.items() if not k.startswith("net.fc."))
    assert not any(p.requires_grad for p in net.net.layer3.parameters()) and net.net.fc.weight.requires_grad


def test_results_dir_moves_the_checkpoint_and_the_cache(workdir: Path, capsys) -> None:
    assert pretrain.main(["--smoke", "--epochs", "1", "--image-size", "16", "--results-dir", "elsewhere"]) == 0
    path = Path("elsewhere") / "checkpoints" / "source_resnet18_16px_smoke.pt"
    assert capsys.readouterr().out.startswith(f"saved {path}:")
    assert (workdir / path).is_file() and any((workdir / "elsewhere" / "cache").iterdir())
    assert {p.name for p in workdir.iterdir()} == {"elsewhere"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--epochs", "0"], "--epochs must be in [1, 10000], got 0"),
     (["--epochs", "-3"], "--epochs must be in [1, 10000], got -3"),
     (["--epochs", "10001"], "--epochs must be in [1, 10000], got 10001"),
     (["--image-size", "15"], "--image-size must be in [16, 1024], got 15"),
     (["--image-size", "1025"], "--image-size must be in [16, 1024], got 1025"),
     (["--lr", "-0.1"], "--lr must be a finite number in (0, 10], got -0.1"),
     (["--lr", "nan"], "--lr must be a finite number in (0, 10], got nan"),
     (["--lr", "inf"], "--lr must be a finite number in (0, 10], got inf"),
     (["--batch-size", "0"], "--batch-size must be in [1, 65536], got 0"),
     (["--batch-size", "99999999"], "--batch-size must be in [1, 65536], got 99999999"),
     (["--seed", "-1"], "--seed must be in [0, 2147483647], got -1"),
     (["--seed", "2147483648"], "--seed must be in [0, 2147483647], got 2147483648"),
     (["--epochs", "0", "--lr", "0"], "--epochs must be in [1, 10000], got 0; --lr must be a finite number in (0, 10], "
                                      "got 0.0"),
     (["--out", "."], "--out .: {work} is a folder, not a regular file: refused")],
)
def test_bad_values_exit_2_with_one_error_line(argv: list[str], message: str, workdir: Path, capsys) -> None:
    assert pretrain.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"error: {message.format(work=workdir.resolve())}\n"
    assert not any(workdir.iterdir())  # nothing written


def test_an_output_folder_that_cannot_be_made_is_an_error(workdir: Path, capsys) -> None:
    (workdir / "results").write_text("a file where the results folder should be")
    results = workdir.resolve() / "results"
    assert pretrain.main(["--epochs", "1"]) == 2
    assert capsys.readouterr().err == ("error: --out results/checkpoints/source_resnet18_32px.pt: "
                                       f"{results} is not a folder\n")
    assert pretrain.main(["--results-dir", "results/deeper", "--lr", "0"]) == 2
    assert capsys.readouterr().err == (
        "error: --lr must be a finite number in (0, 10], got 0.0; --out "
        f"results/deeper/checkpoints/source_resnet18_32px.pt: {results} is not a folder\n")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_folder_is_an_error(workdir: Path, capsys) -> None:
    locked = workdir / "locked"
    locked.mkdir(mode=0o500)
    assert pretrain.main(["--results-dir", str(locked)]) == 2
    assert capsys.readouterr().err == (f"error: --out {locked}/checkpoints/source_resnet18_32px.pt: "
                                       f"{locked.resolve()} is not writable\n")


def test_out_at_a_fifo_or_a_device_node_is_refused_and_left_alone(workdir: Path, capsys) -> None:
    """Never an os.replace over a file that is not a regular one (it once replaced /dev/full). The nodes are made
    in this test's own folder, never the system's /dev."""
    fifo = workdir / "fifo"
    os.mkfifo(fifo)
    assert pretrain.main(["--out", str(fifo)]) == 2
    assert capsys.readouterr().err == f"error: --out {fifo}: {fifo.resolve()} is a FIFO, not a regular file: refused\n"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    link = workdir / "link.pt"
    link.symlink_to(fifo)  # a symlink is followed to what it names
    assert pretrain.main(["--out", str(link)]) == 2
    assert re.fullmatch(rf"error: --out {link}: {fifo.resolve()} is a FIFO, not a regular file: refused\n",
                        capsys.readouterr().err)
    device = workdir / "null"
    try:
        os.mknod(device, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a character device needs root")
    assert pretrain.main(["--out", str(device)]) == 2
    assert capsys.readouterr().err == (f"error: --out {device}: {device.resolve()} is a character device, not a "
                                       "regular file: refused\n")
    assert stat.S_ISCHR(os.lstat(device).st_mode)
    assert sorted(p.name for p in workdir.iterdir()) == ["fifo", "link.pt", "null"]  # nothing else written


def test_the_last_replace_refuses_a_node_that_appeared_after_the_check(workdir: Path) -> None:
    tmp, target = workdir / "tmp.pt", workdir / "late"
    tmp.write_bytes(b"checkpoint")
    os.mkfifo(target)
    with pytest.raises(UsageError, match=rf"^--out {target}: a FIFO, not a regular file: refused$"):
        paths.replace_into(tmp, target, "--out")
    assert stat.S_ISFIFO(os.lstat(target).st_mode) and tmp.read_bytes() == b"checkpoint"


def test_flags_are_checked_before_torch_loads(workdir: Path) -> None:
    code = ("import sys\nfrom study import pretrain\nrc = pretrain.main(['--epochs', '0'])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "error: --epochs must be in [1, 10000], got 0\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
        (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_malformed_arguments_exit_2(argv: list[str], message: str, workdir: Path, capsys) -> None:
    assert pretrain.main(argv) == 2
    assert capsys.readouterr().err == f"error: {message}\n"  # one line, not argparse's usage block
    assert not any(workdir.iterdir())
