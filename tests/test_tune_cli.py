"""Bad input to the command lines: exit code 2, one line starting ``error:``, no traceback, nothing
written, before torch, Ray or MLflow load. The table covers every flag and every kind of space error."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from study import tune
from studyutil import free_port

OK_SPACE = "params:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
F = "--space focal"


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture()
def spaces_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "spaces"
    folder.mkdir()
    return folder


def run_bad(argv: list[str], capsys: pytest.CaptureFixture, workdir: Path) -> str:
    code = tune.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line, no traceback
    assert not any(workdir.iterdir()), "nothing may be written on bad input"
    return err


# (flags, the message's pattern)
FLAGS = [
    ("--space focl", r"unknown space 'focl'; choose one of: all, .*baseline"),
    ("--space ../../x", r"--space must be a name of letters, digits, _ and -, got '../../x'"),
    ("--space \"fo'cal\"", r"--space must be a name of letters"),
    ("--space ''", r"--space must be a name of letters"),
    ("--space focal --num-samples 0", r"--num-samples must be >= 1, got 0"),
    ("--space focal --num-samples -3", r"--num-samples must be >= 1, got -3"),
    ("--space focal --num-samples x", r"argument --num-samples: invalid int value: 'x'"),
    ("--space focal --max-epochs -1", r"--max-epochs must be >= 1, got -1"),
    ("--space focal --max-epochs 0", r"--max-epochs must be >= 1, got 0"),
    ("--space focal --max-epochs 2.5", r"argument --max-epochs: invalid int value"),
    ("--space focal --batch-size 0", r"--batch-size must be >= 1, got 0"),
    ("--space focal --grace-period 0", r"--grace-period must be >= 1, got 0"),
    ("--space focal --reduction-factor 1", r"--reduction-factor must be >= 2, got 1"),
    ("--space focal --reduction-factor 0", r"--reduction-factor must be >= 2, got 0"),
    ("--space focal --max-concurrent 0", r"--max-concurrent must be >= 1, got 0"),
    ("--space focal --image-size 100000", r"--image-size must be in 16..1024, got 100000"),
    ("--space focal --image-size 8", r"--image-size must be in 16..1024, got 8"),
    ("--space focal --image-size 0", r"--image-size must be in 16..1024, got 0"),
    ("--space focal --seed -1", r"--seed must be in 0..2147483647, got -1"),
    ("--space focal --seed 99999999999", r"--seed must be in 0..2147483647"),
    ("--space focal --seed abc", r"argument --seed: invalid int value: 'abc'"),
    ("--space focal --confirm-top 0", r"--confirm-top must be >= 1, got 0"),
    ("--space focal --confirm-seeds -1", r"--confirm-seeds must be in 0..100, got -1"),
    ("--space focal --confirm-seeds 1000", r"--confirm-seeds must be in 0..100, got 1000"),
    ("--space focal --cpus-per-trial 0", r"--cpus-per-trial must be > 0, got 0"),
    ("--space focal --cpus-per-trial -2", r"--cpus-per-trial must be > 0"),
    ("--space focal --cpus-per-trial nan", r"argument --cpus-per-trial: expected a finite number, got 'nan'"),
    ("--space focal --cpus-per-trial inf", r"argument --cpus-per-trial: expected a finite number, got 'inf'"),
    ("--space focal --cpus-per-trial 1000", r"--cpus-per-trial 1000 asked for, but this machine has \d+ CPUs"),
    ("--space focal --cpus-per-trial two", r"argument --cpus-per-trial: expected a number, got 'two'"),
    ("--space focal --gpus-per-trial nan", r"argument --gpus-per-trial: expected a finite number, got 'nan'"),
    ("--space focal --gpus-per-trial -1", r"--gpus-per-trial must be a fraction in \[0, 1\] or a whole number"),
    ("--space focal --gpus-per-trial 1.5", r"--gpus-per-trial must be a fraction in \[0, 1\] or a whole number"),
    ("--space focal --gpus-per-trial 64", r"--gpus-per-trial 64 asked for, but this machine has \d+ GPUs"),
    ("--space focal --data cifar", r"unknown data set 'cifar'; choose one of: animals, animals_source, digits"),
    ("--space focal --data ./no/such/folder", r"no/such/folder"),
    ("--space focal --ratio 2", r"ratio must be in \(0, 1\]"),
    ("--space focal --ratio 0", r"ratio must be in \(0, 1\]"),
    ("--space focal --ratio=-1:11", r"ratio must be in \(0, 1\]"),
    ("--space focal --ratio 1:0", r"ratio must be a number in \(0, 1\] or 'a:b'"),
    ("--space focal --ratio abc", r"ratio must be a number in \(0, 1\] or 'a:b'"),
    ("--space focal --ratio nan", r"ratio"),
    ("--space focal --ratio inf", r"ratio"),
    ("--space focal --counts cat=1000;dog=11000", r"per-class counts must look like 'cat=1000,dog=11000'"),
    ("--space focal --counts cat=-5,dog=10", r"per-class counts must look like"),
    ("--space focal --counts lion=5,dog=10", r"per-class counts name unknown classes \['lion'\]"),
    ("--space focal --ratio 1:11 --counts cat=5,dog=55", r"--ratio and --counts both given; choose one"),
    ("--space focal --eval-costs 5", r"--eval-costs must look like FN:FP, e.g. 11:1, got '5'"),
    ("--space focal --eval-costs 0:1", r"--eval-costs FN and FP must be finite and > 0, got '0:1'"),
    ("--space focal --eval-costs=-3:1", r"--eval-costs FN and FP must be finite and > 0"),
    ("--space focal --eval-costs nan:1", r"--eval-costs FN and FP must be finite and > 0"),
    ("--space focal --eval-costs a:b", r"--eval-costs must look like FN:FP"),
    ("--space focal --tracking-uri ftp://x", r"unsupported tracking URI 'ftp://x'"),
    ("--space focal --tracking-uri file:///tmp/mlruns", r"unsupported tracking URI 'file:///tmp/mlruns'"),
    ("--space focal --tracking-uri sqlite:////nonexistent_dir/x.db", r"tracking URI sqlite:////nonexistent_dir/x.db: folder "
     r"/nonexistent_dir does not exist"),
    ("--space focal --tracking-uri sqlite:///no/such/dir/x.db", r"folder .*no/such/dir does not exist"),
    ("--space focal --address 127.0.0.1:1", r"--address 127.0.0.1:1: cannot reach a Ray cluster at 127.0.0.1:1"),
    ("--space focal --address nohostport", r"--address must be auto or host:port, got 'nohostport'"),
    ("--space focal --address host:port", r"--address must be auto or host:port, got 'host:port'"),
    ("--space focal --storage-path /dev/null/x", r"--storage-path /dev/null/x: /dev/null is not a folder"),
    ("--space focal --results-dir /dev/null/y", r"--results-dir /dev/null/y: /dev/null is not a folder"),
    ("--space focal --results-dir /dev/null", r"--results-dir /dev/null: /dev/null is not a folder"),
    ("--space focal --resume --storage-path nosuchfs://bucket/ray", r"--resume: cannot list storage nosuchfs://bucket/ray: "),
    ("--space focal --resume", r"--resume: no earlier 'focal' study under"),
    ("--space focal --no-such-flag", r"unrecognized arguments: --no-such-flag"),
    ("--data digits", r"the following arguments are required: --space"),
    ("--space focal --smoke extra", r"unrecognized arguments: extra"),
    ("--space transfer --weights-typo x", r"unrecognized arguments"),
    ("--space ldam_drw --max-epochs 1", r"ldam_drw: drw_epoch 2 is after the last epoch \(1\)"),
]


@pytest.mark.parametrize(("flags", "message"), FLAGS, ids=[f for f, _ in FLAGS])
def test_bad_flag_is_one_line_exit_2_nothing_written(flags, message, capsys, workdir) -> None:
    import shlex

    assert re.search(message, run_bad(shlex.split(flags), capsys, workdir))


# (a space file's text, the message's pattern): every rule a space is checked against when it loads
SPACES = [
    ("params:\n  lr: {type: float, low: 1\n", r"bad.yaml line 3: malformed YAML"),
    ("- a\n- b\n", r"bad.yaml: expected a mapping at the top level"),
    ("nonsense: 1\n" + OK_SPACE, r"bad.yaml: unknown key 'nonsense'"),
    ("params:\n  lr: {type: float, low: -0.1, high: 0.1}\n", r"bad.yaml: params.lr.*lr"),
    ("params:\n  lr: {type: float, low: 0.0, high: 0.1}\n", r"bad.yaml: params.lr"),
    ("fixed: {lr: -1}\nparams:\n  gamma: {type: float, low: 0, high: 2}\n", r"bad.yaml: fixed.lr"),
    ("fixed: {loss: focal}\nparams:\n  gamma: {type: float, low: -50, high: 2}\n", r"bad.yaml: params.gamma"),
    ("fixed: {loss: focal}\nparams:\n  alpha: {type: float, low: 0.1, high: 7}\n", r"bad.yaml: params.alpha"),
    ("fixed: {loss: focal, alpha: 7}\n" + OK_SPACE, r"bad.yaml: fixed.alpha"),
    ("fixed: {sampler: over_dup}\nparams:\n  ratio: {type: float, low: 0.5, high: 1.5}\n", r"bad.yaml: params.ratio"),
    ("fixed: {sampler: over_dup, ratio: 0}\n" + OK_SPACE, r"bad.yaml: fixed.ratio"),
    ("fixed: {loss: weighted_ce}\nparams:\n  weight_ratio: {type: float, low: -1, high: 5}\n", r"bad.yaml: params.weight_ratio"),
    ("fixed: {loss: weighted_ce}\nparams:\n  cost_ratio: {type: float, low: 0, high: 5}\n", r"bad.yaml: params.cost_ratio"),
    ("fixed: {sampler: over_smote, k_neighbors: 0}\n" + OK_SPACE, r"bad.yaml: fixed.k_neighbors"),
    ("params:\n  lr: {type: float, low: .nan, high: 0.1}\n", r"bad.yaml: params.lr"),
    ("params:\n  lr: {type: float, low: 1.0e-4, high: .inf}\n", r"bad.yaml: params.lr"),
    ("fixed: {lr: .nan}\nparams:\n  gamma: {type: float, low: 0, high: 2}\n", r"bad.yaml: fixed.lr"),
    ("params:\n  lr: {type: float, low: 0.1, high: 0.01}\n", r"`low <= high` must hold, but got \(low=0.1, high=0.01\)"),
    ("params:\n  lr: {type: float, low: 0, high: 0.1, log: true}\n", r"bad.yaml: params.lr"),
    ("params:\n  lr: {type: float, low: 1.0e-4, high: 0.1, log: maybe}\n", r"log must be true or false"),
    ("params:\n  lr: {type: gaussian, low: 0, high: 1}\n", r"bad.yaml: params.lr: expected a mapping with type float, int or "
     r"categorical"),
    ("params:\n  lr: 0.01\n", r"bad.yaml: params.lr: expected a mapping"),
    ("params: [lr]\n", r"bad.yaml: params"),
    ("params:\n  sampler: {type: categorical, choices: []}\n", r"choices must be a non-empty list"),
    ("params:\n  sampler: {type: categorical, choices: [smote]}\n", r"params.sampler.choices: unknown sampler 'smote'; choose one of: none, over_aug"),
    ("params:\n  loss: {type: categorical, choices: [focl]}\n", r"params.loss.choices: unknown loss 'focl'; choose one of: balanced_softmax, ce"),
    ("params:\n  lr: {type: float, low: 1.0e-4, high: 0.1, step: 2}\n", r"unknown key 'step' for type float"),
    ("params:\n  momentum: {type: float, low: 0, high: 1}\n", r"bad.yaml: params.momentum: unknown key"),
    ("fixed: {optimizer: sgd}\n" + OK_SPACE, r"bad.yaml: fixed.optimizer: unknown key"),
    ("fixed: {lr: 0.01}\n" + OK_SPACE, r"params.lr: also fixed"),
    ("fixed: [lr]\n" + OK_SPACE, r"bad.yaml: fixed"),
    ("defaults: [epochs]\n" + OK_SPACE, r"bad.yaml: defaults"),
    ("defaults: {epochs: 0}\n" + OK_SPACE, r"bad.yaml: defaults.epochs"),
    ("defaults: {epochs: 2.5}\n" + OK_SPACE, r"bad.yaml: defaults.epochs"),
    ("defaults: {reduction_factor: 1}\n" + OK_SPACE, r"bad.yaml: defaults.reduction_factor"),
    ("defaults: {image_size: 100000}\n" + OK_SPACE, r"bad.yaml: defaults.image_size"),
    ("defaults: {patience: 3}\n" + OK_SPACE, r"bad.yaml: defaults.patience: unknown key"),
    ("params:\n  lr: {type: float, low: 1.0e-4, high: 0.1}\n  gamma: {type: float, low: 0, high: 2, when: loss}\n",
     r"bad.yaml: params.gamma.when"),
    ("params:\n  gamma: {type: float, low: 0, high: 2, when: {nothing: [x]}}\n", r"bad.yaml: params.gamma.when"),
    ("fixed: {freeze: layer2}\n" + OK_SPACE, r"bad.yaml.*freez"),
    ("fixed: {model: pretrained}\nparams:\n  freeze: {type: categorical, choices: [none, layer9]}\n",
     r"params.freeze.choices: unknown freeze 'layer9'; choose one of: none, stem"),
    ("fixed: {trial_seed: 3}\n" + OK_SPACE, r"bad.yaml.*trial_seed"),
    ("approaches: []\n", r"bad.yaml: approaches"),
    ("approaches: bad\n", r"bad.yaml: approaches"),
    ("approaches: [bad]\n", r"bad.yaml: approaches\[0\]: 'bad' cannot list itself"),
    ("approaches: [nosuchspace]\n", r"unknown space 'nosuchspace'"),
    ("approaches: [{name: x, bogus: 1}]\n", r"bad.yaml"),
    ("approaches: [focal]\nfixed: {lr: 0.1}\n", r"bad.yaml"),
]


@pytest.mark.parametrize(("text", "message"), SPACES, ids=[f"space{i}" for i in range(len(SPACES))])
def test_bad_space_is_one_line_exit_2_nothing_written(text, message, capsys, workdir, spaces_dir) -> None:
    (spaces_dir / "bad.yaml").write_text(text)
    err = run_bad(["--space", "bad", "--spaces-dir", str(spaces_dir)], capsys, workdir)
    assert re.search(message, err), err


def test_the_table_covers_at_least_90_bad_inputs() -> None:
    assert len(FLAGS) + len(SPACES) + len(DATA) >= 90


def folder(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    from PIL import Image

    for split, classes in layout.items():
        for name, n in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("L", (8, 8), color=i * 7 % 255).save(root / split / name / f"{i}.png")
    return root


# (a folder layout, the message's pattern): data errors found without decoding
DATA = [
    ({"train": {"cat": 3}, "validation": {"cat": 2}}, r"single class|one class|only one class"),
    ({"train": {"cat": 3, "dog": 0}, "validation": {"cat": 2, "dog": 2}}, r"dog"),
    ({"validation": {"cat": 2, "dog": 2}}, r"train"),
    ({"train": {"cat": 3, "dog": 3}}, r"validation"),
    ({"train": {"cat": 3, "dog": 3}, "validation": {"cat": 2, "cow": 2}}, r"cow|dog"),
]


@pytest.mark.parametrize(("layout", "message"), DATA, ids=[f"data{i}" for i in range(len(DATA))])
def test_bad_folder_is_one_line_exit_2(layout, message, capsys, workdir, tmp_path) -> None:
    root = folder(tmp_path / "imgs", layout)
    err = run_bad(["--space", "focal", "--data", str(root)], capsys, workdir)
    assert re.search(message, err), err


def test_a_class_folder_linking_back_into_the_tree_is_refused(capsys, workdir, tmp_path) -> None:
    root = folder(tmp_path / "imgs", {"train": {"cat": 3, "dog": 3}, "validation": {"cat": 2, "dog": 2}})
    (root / "train" / "loop").symlink_to(root / "train" / "cat")
    err = run_bad(["--space", "focal", "--data", str(root)], capsys, workdir)
    assert "symlink" in err or "link" in err


def test_unreachable_tracking_server(capsys, workdir) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    err = run_bad(["--space", "focal", "--tracking-uri", uri], capsys, workdir)
    assert f"cannot reach the MLflow tracking server at {uri}" in err


def test_missing_weights_file_is_named(capsys, workdir, spaces_dir) -> None:
    (spaces_dir / "mine.yaml").write_text("fixed: {model: pretrained, weights: /no/such/weights.pt}\n" + OK_SPACE)
    err = run_bad(["--space", "mine", "--spaces-dir", str(spaces_dir)], capsys, workdir)
    assert "weights file /no/such/weights.pt does not exist" in err


def test_a_weights_file_that_is_not_a_checkpoint_is_refused_before_decoding(capsys, workdir, spaces_dir, tmp_path) -> None:
    fake = tmp_path / "fake.pt"
    fake.write_text("not a checkpoint")
    (spaces_dir / "mine.yaml").write_text(f"fixed: {{model: pretrained, weights: {fake}}}\n" + OK_SPACE)
    err = run_bad(["--space", "mine", "--spaces-dir", str(spaces_dir)], capsys, workdir)
    assert "is not a torch checkpoint" in err


def test_checks_import_neither_torch_ray_nor_mlflow(capsys, workdir) -> None:
    import subprocess

    code = "import sys; from study import tune; tune.main(['--space', 'nope']); " \
           "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_smote_with_too_few_minority_samples_fails_before_ray(capsys, workdir) -> None:
    assert tune.main(["--space", "sampling", "--data", "digits", "--counts", "3=4,8=80", "--confirm-seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"SMOTE needs at least k_neighbors \+ 1 = 6 samples of class 0, got 4", err), err
    assert not (workdir / "results" / "ray").exists() and not (workdir / "results" / "mlflow.db").exists()


def test_help_documents_every_flag(capsys) -> None:
    with pytest.raises(SystemExit):
        tune.main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--space", "--data", "--ratio", "--num-samples", "--max-epochs", "--seed", "--cpus-per-trial",
                 "--gpus-per-trial", "--max-concurrent", "--address", "--tracking-uri", "--storage-path", "--resume",
                 "--smoke", "--confirm-top", "--confirm-seeds", "--confirm-resplit", "--eval-costs", "--verbose"):
        assert flag in out


def test_study_ids_are_unique_within_a_second() -> None:
    ids = {tune.new_study_id("focal") for _ in range(50)}
    assert len(ids) > 45 and all(re.fullmatch(r"focal-\d{8}-\d{6}-[0-9a-f]{4}", i) for i in ids)


def test_resume_finds_the_latest_study_of_its_space(tmp_path) -> None:
    for name in ("focal-20261101-100000-abcd", "focal-20261102-090000-0001", "focal-x-20261201-000000", "all-20261203-000000"):
        (tmp_path / name).mkdir()
    assert tune.latest_study(str(tmp_path), "focal") == "focal-20261102-090000-0001"
