"""Bad input to the command lines: exit code 2, one line starting ``error:``, no traceback, nothing
written, before torch, Ray or MLflow load. The table covers every flag and every kind of space error."""

from __future__ import annotations

import base64
import dataclasses
import http.server
import json
import os
import re
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from studyutil import free_port

from study import paths, tune
from study.errors import UsageError
from study.plan import (
    FINISHED_FILE,
    PLAN_FILE,
    Confirm,
    Plan,
    mark_finished,
    read_plan,
    save_plan,
    study_file,
)

OK_SPACE = "params:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
VALID_SPACE = OK_SPACE + "no_neutral: a test space, not an approach of the study\n"  # passes every space rule
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
    ("--space ../../x", r"--space must be a name of letters, digits, _ and - \(at most 64\), got '../../x'"),
    ("--space \"fo'cal\"", r"--space must be a name of letters, digits, _ and - \(at most 64\), got \"fo'cal\""),
    ("--space ''", r"--space is required \(or --plan FILE to re-run a saved plan\)"),
    ("--space " + "a" * 300, r"--space must be a name of letters, digits, _ and - \(at most 64\), got 'a{64}'$"),
    ("--space focal --num-samples 0", r"--num-samples must be in 1..10000, got 0"),
    ("--space focal --num-samples -3", r"--num-samples must be in 1..10000, got -3"),
    ("--space focal --num-samples 10001", r"--num-samples must be in 1..10000, got 10001"),
    ("--space focal --num-samples x", r"argument --num-samples: invalid int value: 'x'"),
    ("--space focal --max-epochs -1", r"--max-epochs must be in 1..10000, got -1"),
    ("--space focal --max-epochs 0", r"--max-epochs must be in 1..10000, got 0"),
    ("--space focal --max-epochs 99999999999", r"--max-epochs must be in 1..10000, got 99999999999"),
    ("--space focal --max-epochs 2.5", r"argument --max-epochs: invalid int value: '2.5'"),
    ("--space focal --batch-size 0", r"--batch-size must be in 1..65536, got 0"),
    ("--space focal --batch-size 1000000", r"--batch-size must be in 1..65536, got 1000000"),
    ("--space focal --grace-period 0", r"--grace-period must be in 1..10000, got 0"),
    ("--space focal --reduction-factor 1", r"--reduction-factor must be in 2..100, got 1"),
    ("--space focal --reduction-factor 0", r"--reduction-factor must be in 2..100, got 0"),
    ("--space focal --max-concurrent 0", r"--max-concurrent must be in 1..1024, got 0"),
    ("--space focal --max-concurrent 5000", r"--max-concurrent must be in 1..1024, got 5000"),
    ("--space focal --image-size 100000", r"--image-size must be in 16..1024, got 100000"),
    ("--space focal --image-size 8", r"--image-size must be in 16..1024, got 8"),
    ("--space focal --image-size 0", r"--image-size must be in 16..1024, got 0"),
    ("--space focal --seed -1", r"--seed must be in 0..2147483647, got -1"),
    ("--space focal --seed 99999999999", r"--seed must be in 0..2147483647, got 99999999999"),
    ("--space focal --seed abc", r"argument --seed: invalid int value: 'abc'"),
    ("--space focal --confirm-top 0", r"--confirm-top must be in 1..20, got 0"),
    ("--space focal --confirm-top 21", r"--confirm-top must be in 1..20, got 21"),
    ("--space focal --confirm-race-seeds 0", r"--confirm-race-seeds must be in 1..100, got 0"),
    ("--space focal --confirm-min-seeds 0", r"--confirm-min-seeds must be in 1..100, got 0"),
    ("--space focal --confirm-max-seeds 101", r"--confirm-max-seeds must be in 1..100, got 101"),
    ("--space focal --confirm-min-seeds 5 --confirm-max-seeds 4",
     r"--confirm-min-seeds 5 is above --confirm-max-seeds 4"),
    ("--space focal --confirm-min-seeds 13", r"--confirm-min-seeds 13 is above --confirm-max-seeds 12"),
    ("--space focal --confirm-seeds 3 --confirm-max-seeds 4", r"--confirm-seeds fixes the number of seeds; give it or "
     r"--confirm-min-seeds/--confirm-max-seeds, not both"),
    ("--space focal --confirm-seeds -1", r"--confirm-seeds must be in 0..100, got -1"),
    ("--space focal --confirm-seeds 1000", r"--confirm-seeds must be in 0..100, got 1000"),
    ("--space focal --rope -0.1", r"--rope must be in \[0, 1\) \(a macro-F1 difference\), got -0.1"),
    ("--space focal --rope 1", r"--rope must be in \[0, 1\) \(a macro-F1 difference\), got 1"),
    ("--space focal --rope nan", r"argument --rope: expected a finite number, got 'nan'"),
    ("--space focal --confirm-resplit", r"unrecognized arguments: --confirm-resplit"),
    ("--space focal --cpus-per-trial 0", r"--cpus-per-trial must be > 0, got 0"),
    ("--space focal --cpus-per-trial -2", r"--cpus-per-trial must be > 0, got -2"),
    ("--space focal --cpus-per-trial nan", r"argument --cpus-per-trial: expected a finite number, got 'nan'"),
    ("--space focal --cpus-per-trial inf", r"argument --cpus-per-trial: expected a finite number, got 'inf'"),
    ("--space focal --cpus-per-trial 1000", r"--cpus-per-trial 1000 asked for, but this machine has \d+ CPUs"),
    ("--space focal --cpus-per-trial two", r"argument --cpus-per-trial: expected a number, got 'two'"),
    ("--space focal --gpus-per-trial nan", r"argument --gpus-per-trial: expected a finite number, got 'nan'"),
    ("--space focal --gpus-per-trial -1", r"--gpus-per-trial must be a fraction in \[0, 1\] or a whole number, got -1"),
    ("--space focal --gpus-per-trial 1.5", r"--gpus-per-trial must be a fraction in \[0, 1\] or a whole number, "
     r"got 1.5"),
    ("--space focal --gpus-per-trial 64", r"--gpus-per-trial 64 asked for, but this machine has \d+ GPUs"),
    ("--space focal --data cifar", r"unknown data set 'cifar'; choose one of: animals, animals_bird_bear, animals_horse_zebra, "
                                    r"animals_sheep_cow, animals_source, digits, digits_1_7, digits_lt, or a folder path"),
    ("--space focal --data ./no/such/folder", r"data path no/such/folder does not exist"),
    ("--space focal --ratio 2", r"ratio must be in \(0, 1\] \(minority / majority\), got 2.0"),
    ("--space focal --ratio 0", r"ratio must be in \(0, 1\] \(minority / majority\), got 0.0"),
    ("--space focal --ratio=-1:11", r"ratio must be in \(0, 1\] \(minority / majority\), got -0.0909"),
    ("--space focal --ratio 1:0", r"ratio must be a number in \(0, 1\] or 'a:b', got '1:0'"),
    ("--space focal --ratio abc", r"ratio must be a number in \(0, 1\] or 'a:b', got 'abc'"),
    ("--space focal --ratio nan", r"ratio must be in \(0, 1\] \(minority / majority\), got nan"),
    ("--space focal --ratio inf", r"ratio must be in \(0, 1\] \(minority / majority\), got inf"),
    ("--space focal --ratio 1e-320", r"ratio 1e-320 is below 0.0001 \(one minority image per 10,000 of the majority\)"),
    ("--space focal --ratio 1:1e308", r"ratio 1:1e308 is below 0.0001"),
    ("--space focal --ratio 1e308:1e-308", r"ratio must be in \(0, 1\] \(minority / majority\), got inf"),
    ("--space focal --counts cat=1000;dog=11000", r"per-class counts must look like 'cat=1000,dog=11000', got "
     r"'cat=1000;dog=11000'"),
    ("--space focal --counts cat=-5,dog=10",
     r"per-class counts must look like 'cat=1000,dog=11000', got 'cat=-5,dog=10'"),
    ("--space focal --counts lion=5,dog=10", r"per-class counts name unknown classes \['lion'\]"),
    ("--space focal --ratio 1:11 --counts cat=5,dog=55", r"--ratio and --counts both given; choose one"),
    ("--space focal --eval-costs 5", r"--eval-costs must look like FN:FP, e.g. 11:1, got '5'"),
    ("--space focal --eval-costs 0:1", r"--eval-costs FN and FP must be finite and > 0, got '0:1'"),
    ("--space focal --eval-costs=-3:1", r"--eval-costs FN and FP must be finite and > 0, got '-3:1'"),
    ("--space focal --eval-costs nan:1", r"--eval-costs FN and FP must be finite and > 0, got 'nan:1'"),
    ("--space focal --eval-costs a:b", r"--eval-costs must look like FN:FP, e.g. 11:1, got 'a:b'"),
    ("--space focal --eval-costs 1e308:1e-308",
     r"--eval-costs FN / FP must be in \[1e-06, 1e\+06\], got '1e308:1e-308'"),
    ("--space focal --tracking-uri ftp://x", r"unsupported tracking URI 'ftp://x'"),
    ("--space focal --tracking-uri file:///tmp/mlruns", r"unsupported tracking URI 'file:///tmp/mlruns'"),
    ("--space focal --tracking-uri ftp://u:secret@x", r"unsupported tracking URI 'ftp://u:\*\*\*@x'"),
    ("--space focal --tracking-uri sqlite:////nonexistent_dir/x.db",
     r"tracking URI sqlite:////nonexistent_dir/x.db: folder "
     r"/nonexistent_dir does not exist"),
    ("--space focal --tracking-uri sqlite:///no/such/dir/x.db", r"folder .*no/such/dir does not exist"),
    ("--space focal --tracking-uri sqlite:///", r"tracking URI 'sqlite:///' names no database file"),
    ("--space focal --address 127.0.0.1:1", r"--address 127.0.0.1:1: cannot reach a Ray cluster at 127.0.0.1:1"),
    ("--space focal --address nohostport", r"--address must be auto or host:port, got 'nohostport'"),
    ("--space focal --address host:port", r"--address must be auto or host:port, got 'host:port'"),
    ("--space focal --address host:99999", r"--address must be auto or host:port, got 'host:99999'"),
    ("--space focal --storage-path /dev/null/x", r"--storage-path /dev/null/x: /dev/null is not a folder"),
    ("--space focal --storage-path foo://x", r"--storage-path foo://x: unsupported storage foo://; use a folder or "
     r"s3://bucket/path"),
    ("--space focal --storage-path s3://", r"--storage-path s3://: unsupported storage s3://"),
    ("--space focal --results-dir /dev/null/y", r"--results-dir /dev/null/y: /dev/null is not a folder"),
    ("--space focal --results-dir /dev/null",
     r"--results-dir /dev/null: /dev/null is not a folder \(a character device\)"),
    ("--space focal --resume --storage-path nosuchfs://bucket/ray",
     r"--storage-path nosuchfs://bucket/ray: unsupported "
     r"storage nosuchfs://"),
    ("--space focal --resume", r"--resume: no earlier 'focal' study under .*results/ray"),
    ("--space focal --no-such-flag", r"unrecognized arguments: --no-such-flag"),
    ("--data digits", r"--space is required \(or --plan FILE to re-run a saved plan\)"),
    ("--space focal --smoke extra", r"unrecognized arguments: extra"),
    ("--space transfer --weights-typo x", r"unrecognized arguments: --weights-typo x"),
    ("--space ldam_drw --max-epochs 1", r"ldam_drw: drw_epoch 2 is after the last epoch \(1\)"),
    ("--plan /no/such/plan.json", r"--plan /no/such/plan.json: No such file or directory"),
    ("--plan /dev/null", r"--plan /dev/null: a character device, not a regular file"),
    ("--plan plan.json --space focal", r"--plan: --space cannot change a saved plan"),
]


@pytest.mark.parametrize(("flags", "message"), FLAGS, ids=[f for f, _ in FLAGS])
def test_bad_flag_is_one_line_exit_2_nothing_written(flags, message, capsys, workdir) -> None:
    import shlex

    assert re.search(message, run_bad(shlex.split(flags), capsys, workdir))


# (a space file's text, the message's pattern): every rule a space is checked against when it loads
SPACES = [
    ("params:\n  lr: {type: float, low: 1\n",
     r"bad\.yaml line 3: malformed YAML: expected ',' or '\}', but got '<stream end>'"),
    ("- a\n- b\n", r"bad\.yaml: expected a mapping at the top level"),
    ("nonsense: 1\n" + OK_SPACE, r"bad\.yaml: unknown key 'nonsense'; allowed: approaches.*"),
    ("params:\n  lr: {type: float, low: -0.1, high: 0.1}\n",
     r"bad\.yaml: params\.lr\.low: `lr in \(0, 10\]` must hold, but got -0\.1"),
    ("params:\n  lr: {type: float, low: 0.0, high: 0.1}\n",
     r"bad\.yaml: params\.lr\.low: `lr in \(0, 10\]` must hold, but got 0\.0"),
    ("fixed: {lr: -1}\nparams:\n  gamma: {type: float, low: 0, high: 2}\n",
     r"bad\.yaml: fixed\.lr: `lr in \(0, 10\]` must hold, but got -1"),
    ("fixed: {loss: focal}\nparams:\n  gamma: {type: float, low: -50, high: 2}\n",
     r"bad\.yaml: params\.gamma\.low: `gamma in \[0, 20\]` must hold, but got -50"),
    ("fixed: {loss: focal}\nparams:\n  alpha: {type: float, low: 0.1, high: 7}\n",
     r"bad\.yaml: params\.alpha\.high: `alpha in \[0, 1\]` must hold, but got 7"),
    ("fixed: {loss: focal, alpha: 7}\n" + OK_SPACE,
     r"bad\.yaml: fixed\.alpha: `alpha in \[0, 1\]` must hold, but got 7"),
    ("fixed: {sampler: over_dup}\nparams:\n  ratio: {type: float, low: 0.5, high: 1.5}\n",
     r"bad\.yaml: params\.ratio\.high: `ratio in \(0, 1\]` must hold, but got 1\.5"),
    ("fixed: {sampler: over_dup, ratio: 0}\n" + OK_SPACE,
     r"bad\.yaml: fixed\.ratio: `ratio in \(0, 1\]` must hold, but got 0"),
    ("fixed: {loss: weighted_ce}\nparams:\n  weight_ratio: {type: float, low: -1, high: 5}\n",
     r"bad\.yaml: params\.weight_ratio\.low: `weight_ratio in \(0, 1e4\]` must hold, but got -1"),
    ("fixed: {loss: weighted_ce}\nparams:\n  cost_ratio: {type: float, low: 0, high: 5}\n",
     r"bad\.yaml: params\.cost_ratio\.low: `cost_ratio in \(0, 1e6\]` must hold, but got 0"),
    ("fixed: {sampler: over_smote, k_neighbors: 0}\n" + OK_SPACE,
     r"bad\.yaml: fixed\.k_neighbors: `k_neighbors in \[1, 100\]` must hold, but got 0"),
    ("params:\n  lr: {type: float, low: .nan, high: 0.1}\n",
     r"bad\.yaml: params\.lr\.low: expected a finite number, got nan"),
    ("params:\n  lr: {type: float, low: 1.0e-4, high: .inf}\n",
     r"bad\.yaml: params\.lr\.high: expected a finite number, got inf"),
    ("fixed: {lr: .nan}\nparams:\n  gamma: {type: float, low: 0, high: 2}\n",
     r"bad\.yaml: fixed\.lr: expected a finite number, got nan"),
    ("params:\n  lr: {type: float, low: 0.1, high: 0.01}\n",
     r"bad\.yaml: params\.lr: `low <= high` must hold, but got \(low=0\.1, high=0\.01\)"),
    ("params:\n  lr: {type: float, low: 0, high: 0.1, log: true}\n",
     r"bad\.yaml: params\.lr\.low: `lr in \(0, 10\]` must hold, but got 0"),
    ("params:\n  lr: {type: float, low: 1.0e-4, high: 0.1, log: maybe}\n",
     r"bad\.yaml: params\.lr: log must be true or false, got 'maybe'"),
    ("params:\n  lr: {type: gaussian, low: 0, high: 1}\n",
     r"bad\.yaml: params\.lr: expected a mapping with type float, int or categorical, got \{'type': "
     r"'gaussian', 'low': 0, 'high': 1\}"),
    ("params:\n  lr: 0.01\n",
     r"bad\.yaml: params\.lr: expected a mapping with type float, int or categorical, got 0\.01"),
    ("params: [lr]\n", r"bad\.yaml: params: expected a mapping, got \['lr'\]"),
    ("params:\n  sampler: {type: categorical, choices: []}\n",
     r"bad\.yaml: params\.sampler: choices must be a non-empty list, got \[\]"),
    ("params:\n  sampler: {type: categorical, choices: [smote]}\n",
     r"bad\.yaml: params\.sampler\.choices: unknown sampler 'smote'; choose one of: none, over_aug, over_dup, "
     r"over_smote, under_cluster, under_random"),
    ("params:\n  loss: {type: categorical, choices: [focl]}\n",
     r"bad\.yaml: params\.loss\.choices: unknown loss 'focl'; choose one of: balanced_softmax, ce, class_balanced, "
     r"focal, ldam_drw, logit_adjusted, weighted_ce"),
    ("params:\n  lr: {type: float, low: 1.0e-4, high: 0.1, step: 2}\n",
     r"bad\.yaml: params\.lr: unknown key 'step' for type float"),
    ("params:\n  momentum: {type: float, low: 0, high: 1}\n",
     r"bad\.yaml: params\.momentum: unknown key; allowed: lr, weight_decay, sampler, ratio, k_neighbors, loss, "
     r"gamma, alpha, weight_ratio, beta, base_loss, max_margin, drw_epoch, tau, model, backbone, weights, freeze, "
     r"cost_ratio, match_steps, cost_use"),
    ("fixed: {optimizer: sgd}\n" + OK_SPACE,
     r"bad\.yaml: fixed\.optimizer: unknown key; allowed: lr, weight_decay, sampler, ratio, k_neighbors, loss, "
     r"gamma, alpha, weight_ratio, beta, base_loss, max_margin, drw_epoch, tau, model, backbone, weights, freeze, "
     r"cost_ratio, match_steps, cost_use"),
    ("fixed: {lr: 0.01}\n" + OK_SPACE, r"bad\.yaml: params\.lr: also fixed; a key is either fixed or searched"),
    ("fixed: [lr]\n" + OK_SPACE, r"bad\.yaml: fixed: expected a mapping, got \['lr'\]"),
    ("defaults: [epochs]\n" + OK_SPACE, r"bad\.yaml: defaults: expected a mapping, got \['epochs'\]"),
    ("defaults: {epochs: 0}\n" + OK_SPACE, r"bad\.yaml: defaults\.epochs: `epochs >= 1` must hold, but got 0"),
    ("defaults: {epochs: 2.5}\n" + OK_SPACE, r"bad\.yaml: defaults\.epochs: expected an integer, got 2\.5"),
    ("defaults: {reduction_factor: 1}\n" + OK_SPACE,
     r"bad\.yaml: defaults\.reduction_factor: `reduction_factor >= 2` must hold, but got 1"),
    ("defaults: {image_size: 100000}\n" + OK_SPACE,
     r"bad\.yaml: defaults\.image_size: `image_size in \[16, 1024\]` must hold, but got 100000"),
    ("defaults: {patience: 3}\n" + OK_SPACE,
     r"bad\.yaml: defaults\.patience: unknown key; allowed: epochs, num_samples, batch_size, image_size, "
     r"grace_period, reduction_factor"),
    ("params:\n  lr: {type: float, low: 1.0e-4, high: 0.1}\n  gamma: {type: float, low: 0, high: 2, when: loss}\n",
     r"bad\.yaml: params\.gamma\.when: expected a mapping of earlier keys to lists of values, got 'loss'"),
    ("params:\n  gamma: {type: float, low: 0, high: 2, when: {nothing: [x]}}\n",
     r"bad\.yaml: params\.gamma\.when: 'nothing' must name an earlier param or fixed value"),
    ("fixed: {freeze: layer2}\n" + OK_SPACE,
     r"bad\.yaml: freeze: `freeze == none unless model == pretrained` must hold, but got freeze='layer2' with "
     r"model='scratch'"),
    ("fixed: {model: pretrained}\nparams:\n  freeze: {type: categorical, choices: [none, layer9]}\n",
     r"bad\.yaml: params\.freeze\.choices: unknown freeze 'layer9'; choose one of: none, stem, layer1, layer2, "
     r"layer3, layer4"),
    ("fixed: {trial_seed: 3}\n" + OK_SPACE,
     r"bad\.yaml: fixed\.trial_seed: set by the searcher for each trial, never by a space file"),
    ("approaches: []\n", r"bad\.yaml: approaches: expected a non-empty list of space names or mappings, got \[\]"),
    ("approaches: bad\n", r"bad\.yaml: approaches: expected a non-empty list of space names or mappings, got 'bad'"),
    ("approaches: [bad]\n", r"bad\.yaml: approaches\[0\]: 'bad' cannot list itself"),
    ("approaches: [nosuchspace]\n", r"unknown space 'nosuchspace'; choose one of: bad"),
    ("approaches: [{name: x, bogus: 1}]\n",
     r"bad\.yaml: approaches\[0\]: unknown key 'bogus'; an inline approach holds.*"),
    ("approaches: [focal]\nfixed: {lr: 0.1}\n",
     r"bad\.yaml: fixed: a composite space holds only description, defaults and approaches"),
]


@pytest.mark.parametrize(("text", "message"), SPACES, ids=[f"space{i}" for i in range(len(SPACES))])
def test_bad_space_is_one_line_exit_2_nothing_written(text, message, capsys, workdir, spaces_dir) -> None:
    (spaces_dir / "bad.yaml").write_text(text)
    err = run_bad(["--space", "bad", "--spaces-dir", str(spaces_dir)], capsys, workdir)
    assert re.fullmatch(f"error: {message}\n", err), err


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _alias_bomb(path: Path) -> None:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]  # 9**9 'lol' when expanded
    path.write_text("\n".join([*lines, "description: *a8"]) + "\n")


# (what is made at <spaces>/bad.yaml, the message's pattern): space files that are not plain, small YAML text
HOSTILE_SPACES = [
    (lambda p: p.mkdir(), r"^error: bad.yaml: a folder, not a regular file$"),
    (_fifo, r"^error: bad.yaml: a FIFO, not a regular file$"),  # stat before open: never hangs
    (lambda p: p.symlink_to("/dev/zero"), r"^error: bad.yaml: a character device, not a regular file$"),
    (lambda p: p.symlink_to(p), r"^error: bad.yaml: a symlink loop$"),
    (lambda p: p.write_bytes(b"description: caf\xe9\n"), r"^error: bad.yaml: not UTF-8 text \(byte 16\)$"),
    (lambda p: p.write_text("params: " + "[" * 100_000 + "]" * 100_000 + "\n"),
     r"^error: bad.yaml: malformed YAML: nested too deeply$"),
    (lambda p: p.write_text("description: x\n" + "#" * (1 << 20) + "\n"),
     r"^error: bad.yaml: 1048592 bytes, larger than the 1048576 allowed$"),
    (_alias_bomb, r"^error: bad.yaml line 2: malformed YAML: aliases \(\*name\) are not allowed in a space file$"),
    (lambda p: p.write_text(f"approaches: [{'x' * 300}]\n"),
     r"^error: bad.yaml: approaches\[0\]: space name must be at most 64 characters, got 300: 'x{20}...'$"),
]


@pytest.mark.parametrize(("make", "message"), HOSTILE_SPACES, ids=[f"hostile{i}" for i in range(len(HOSTILE_SPACES))])
def test_a_hostile_space_file_is_one_line_exit_2(make, message, capsys, workdir, spaces_dir) -> None:
    make(spaces_dir / "bad.yaml")
    err = run_bad(["--space", "bad", "--spaces-dir", str(spaces_dir)], capsys, workdir)
    assert re.fullmatch(message, err.strip()), err


@pytest.mark.parametrize(("defaults", "message"), [
    ("{num_samples: 1000000}", r"the budget's num_samples \(the space's default or --num-samples\) must be in "
                               r"1\.\.10000, got 1000000"),
    ("{epochs: 100000}", r"the budget's epochs \(the space's default or --max-epochs\) must be in 1\.\.10000, "
                         r"got 100000"),
    ("{reduction_factor: 1000}", r"the budget's reduction_factor \(the space's default or --reduction-factor\) must "
                                 r"be in 2\.\.100, got 1000"),
])
def test_a_space_files_budget_has_the_flags_bounds(defaults, message, capsys, workdir, spaces_dir) -> None:
    (spaces_dir / "big.yaml").write_text(f"defaults: {defaults}\n" + VALID_SPACE)
    err = run_bad(["--space", "big", "--spaces-dir", str(spaces_dir)], capsys, workdir)
    assert re.fullmatch(f"error: {message}\n", err), err


def test_a_symlink_loop_as_results_dir(capsys, workdir, tmp_path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    err = run_bad(["--space", "focal", "--results-dir", str(tmp_path / "a" / "deeper")], capsys, workdir)
    assert err == f"error: --results-dir {tmp_path / 'a' / 'deeper'}: a symlink loop\n"


def test_output_paths_at_a_fifo_or_a_device_are_refused(capsys, workdir, tmp_path) -> None:
    """Made in this test's folder, never the system's /dev: each is refused and left as it was."""
    os.mkfifo(tmp_path / "fifo")
    err = run_bad(["--space", "focal", "--tracking-uri", f"sqlite:///{tmp_path / 'fifo'}"], capsys, workdir)
    assert err == (f"error: tracking URI sqlite:///{tmp_path / 'fifo'}: {tmp_path / 'fifo'}: {tmp_path / 'fifo'} is a "
                   "FIFO, not a regular file: refused\n")
    err = run_bad(["--space", "focal", "--storage-path", str(tmp_path / "fifo")], capsys, workdir)
    assert err == f"error: --storage-path {tmp_path / 'fifo'}: {tmp_path / 'fifo'} is not a folder (a FIFO)\n"
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)
    try:
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a character device needs root")
    err = run_bad(["--space", "focal", "--tracking-uri", f"sqlite:///{tmp_path / 'null'}"], capsys, workdir)
    assert f"{tmp_path / 'null'} is a character device, not a regular file: refused\n" in err
    assert stat.S_ISCHR(os.lstat(tmp_path / "null").st_mode)


def test_a_sqlite_uri_at_a_file_that_is_not_a_database(capsys, workdir, tmp_path) -> None:
    (tmp_path / "notes.db").write_text("my notes, not a database")
    uri = f"sqlite:///{tmp_path / 'notes.db'}"
    err = run_bad(["--space", "focal", "--tracking-uri", uri], capsys, workdir)
    assert err == f"error: tracking URI {uri}: {tmp_path / 'notes.db'} is not an SQLite database; name a new file or " \
                  "an MLflow database\n"
    assert (tmp_path / "notes.db").read_text() == "my notes, not a database"


class _Health(http.server.BaseHTTPRequestHandler):
    """/health behind basic auth (user:pw), as MLflow behind a proxy: 200 with the right credentials, else 401."""

    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's API
        auth = self.headers.get("Authorization")
        _Health.seen.append(auth)
        ok = auth == "Basic " + base64.b64encode(b"user:pw").decode()
        self.send_response(200 if ok else 401)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def health_server() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_credentials_in_the_tracking_uri_are_sent_and_never_shown(capsys, workdir, health_server) -> None:
    assert paths.tracking_uri(f"http://user:pw@{health_server}") == f"http://user:pw@{health_server}"
    assert _Health.seen[-1] == "Basic " + base64.b64encode(b"user:pw").decode()
    err = run_bad(["--space", "focal", "--tracking-uri", f"http://user:wrong@{health_server}"], capsys, workdir)
    assert err == f"error: MLflow tracking server at http://user:***@{health_server} answered HTTP 401 on /health\n"
    port = free_port()
    err = run_bad(["--space", "focal", "--tracking-uri", f"https://me:s3cret@127.0.0.1:{port}/x"], capsys, workdir)
    assert err.startswith(f"error: cannot reach the MLflow tracking server at https://me:***@127.0.0.1:{port}/x: ")
    assert "s3cret" not in err


def test_an_address_where_a_silent_server_listens_is_an_error_in_seconds(capsys, workdir) -> None:
    """A TCP server that accepts and never answers: Ray's own client would wait for ever; the check gives up."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        where = f"127.0.0.1:{server.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(UsageError, match=rf"^--address {where}: {where} accepts connections, but no Ray cluster "
                                             r"answered within 3 s \(is it the head's GCS port, 6379 by default\?\)$"):
            tune.check_address(where, probe_timeout=3)
        assert time.monotonic() - start < 10


def folder(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    from PIL import Image

    for split, classes in layout.items():
        for name, n in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("L", (8, 8), color=i * 7 % 255).save(root / split / name / f"{i}.png")
    return root


# (a folder layout, the message's pattern, with {root} the folder): data errors found without decoding
DATA = [
    ({"train": {"cat": 3}, "validation": {"cat": 2}},
     r"data set {root} has a single class \('cat' in {root}/train\); a classifier needs two or more"),
    ({"train": {"cat": 3, "dog": 0}, "validation": {"cat": 2, "dog": 2}},
     r"class folder {root}/train/dog is empty: no image files \(\.bmp, .*\.webp\)"),
    ({"validation": {"cat": 2, "dog": 2}}, r"missing folder {root}/train \(expected <root>/train/<class>/, "
                                           r"<root>/validation/<class>/\)"),
    ({"train": {"cat": 3, "dog": 3}}, r"missing folder {root}/validation \(expected <root>/train/<class>/, "
                                      r"<root>/validation/<class>/\)"),
    ({"train": {"cat": 3, "dog": 3}, "validation": {"cat": 2, "cow": 2}},
     r"class folders of {root}/validation \(cat, cow\) differ from train \(cat, dog\)"),
]


@pytest.mark.parametrize(("layout", "message"), DATA, ids=[f"data{i}" for i in range(len(DATA))])
def test_bad_folder_is_one_line_exit_2(layout, message, capsys, workdir, tmp_path) -> None:
    root = folder(tmp_path / "imgs", layout)
    err = run_bad(["--space", "focal", "--data", str(root)], capsys, workdir)
    assert re.fullmatch("error: " + message.format(root=re.escape(str(root))) + "\n", err), err


def test_a_class_folder_linking_back_into_the_tree_is_refused(capsys, workdir, tmp_path) -> None:
    root = folder(tmp_path / "imgs", {"train": {"cat": 3, "dog": 3}, "validation": {"cat": 2, "dog": 2}})
    (root / "train" / "loop").symlink_to(root / "train" / "cat")
    err = run_bad(["--space", "focal", "--data", str(root)], capsys, workdir)
    assert err.startswith(f"error: folder {root}/train/loop is a symlink back into the data set ({root}/train/cat): "
                          "refused, it would read the same images twice")


def test_unreachable_tracking_server(capsys, workdir) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    err = run_bad(["--space", "focal", "--tracking-uri", uri], capsys, workdir)
    assert re.fullmatch(rf"error: cannot reach the MLflow tracking server at {uri}: \[Errno 111\] Connection refused\n",
                        err), err


def test_missing_weights_file_is_named(capsys, workdir, spaces_dir) -> None:
    (spaces_dir / "mine.yaml").write_text("fixed: {model: pretrained, weights: /no/such/weights.pt}\n" + VALID_SPACE)
    err = run_bad(["--space", "mine", "--spaces-dir", str(spaces_dir)], capsys, workdir)
    assert err == "error: weights file /no/such/weights.pt does not exist\n"


def test_a_weights_file_that_is_not_a_checkpoint_is_refused_before_decoding(capsys, workdir, spaces_dir,
                                                                            tmp_path) -> None:
    fake = tmp_path / "fake.pt"
    fake.write_text("not a checkpoint")
    (spaces_dir / "mine.yaml").write_text(f"fixed: {{model: pretrained, weights: {fake}}}\n" + VALID_SPACE)
    err = run_bad(["--space", "mine", "--spaces-dir", str(spaces_dir)], capsys, workdir)
    assert err == (f"error: weights file {fake} is not a torch checkpoint (16 bytes, neither a torch.save zip archive "
                   "nor a legacy torch file)\n")


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


FLAGS_DOCUMENTED = {
    "--space", "--plan", "--spaces-dir", "--data", "--ratio", "--counts", "--image-size", "--num-samples",
    "--max-epochs", "--batch-size", "--grace-period", "--reduction-factor", "--seed", "--confirm-top",
    "--confirm-race-seeds",
    "--confirm-min-seeds", "--confirm-max-seeds", "--confirm-seeds", "--rope", "--no-resplit", "--eval-costs",
    "--cpus-per-trial", "--gpus-per-trial", "--max-concurrent", "--address", "--tracking-uri", "--storage-path",
    "--results-dir", "--resume", "--smoke", "--verbose",
}


def test_help_documents_every_flag(capsys) -> None:
    """The parser's flags are exactly this list (a new flag must be added here), each with help text in --help."""
    actions = [a for a in tune.parser()._actions if a.option_strings and a.dest != "help"]
    assert {max(a.option_strings, key=len) for a in actions} == FLAGS_DOCUMENTED
    with pytest.raises(SystemExit):
        tune.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for action in actions:
        assert action.help and " ".join(action.help.split())[:40] in out, action.dest


def test_study_ids_are_unique_within_a_second() -> None:
    ids = {tune.new_study_id("focal") for _ in range(50)}
    assert len(ids) > 45 and all(re.fullmatch(r"focal-\d{8}-\d{6}-[0-9a-f]{4}", i) for i in ids)


def test_resume_finds_the_latest_study_of_its_space(tmp_path) -> None:
    for name in ("focal-20261101-100000-abcd", "focal-20261102-090000-0001", "focal-x-20261201-000000",
                 "all-20261203-000000"):
        (tmp_path / name).mkdir()
    assert tune.latest_study(str(tmp_path), "focal") == "focal-20261102-090000-0001"


# ---------------------------------------------------------------- plan.json: --plan and --resume


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _draws(plan: Plan, n: int = 6) -> list[list[dict]]:
    """The first ``n`` search configurations of each approach, from Optuna's TPE seeded as the study seeds it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    draws = []
    for space in plan.spaces:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=plan.seed), direction="maximize")
        ask = space.define_by_run()
        configs = []
        for i in range(n):
            trial = study.ask()
            configs.append({**ask(trial), **trial.params})
            study.tell(trial, float(i % 3))
        draws.append(configs)
    return draws


def test_two_plans_loaded_from_one_file_are_equal_and_draw_the_same_configurations(workdir, tmp_path) -> None:
    plan = tune.preflight(["--space", "all", "--data", "digits", "--ratio", "1:4", "--seed", "7", "--num-samples", "3",
                           "--confirm-seeds", "4", "--rope", "0.05"])
    save_plan(plan, tmp_path / "saved" / "plan.json")
    first, second = (read_plan(tmp_path / "saved" / "plan.json") for _ in range(2))
    assert first == second == plan
    assert first.confirm == Confirm(top=3, race_seeds=2, min_seeds=4, max_seeds=4, rope=0.05, resplit=True)
    assert [s.name for s in first.spaces] == [s.name for s in plan.spaces] and len(first.spaces) > 5
    assert _draws(first) == _draws(second) == _draws(plan)
    assert len({str(c) for approach in _draws(first) for c in approach}) > 6  # the draws differ between trials


def test_plan_json_holds_every_field_with_the_password_redacted(tmp_path) -> None:
    plan = dataclasses.replace(tune.preflight(["--space", "focal", "--data", "digits", "--results-dir", str(tmp_path)]),
                               tracking_uri="http://user:pw@mlflow.example:5000")
    doc = json.loads(plan.to_json())
    assert doc["version"] == 1 and doc["tracking_uri"] == "http://user:***@mlflow.example:5000"
    assert "pw" not in plan.to_json().replace("pw@", "")  # no other copy of the password
    assert set(doc) == {"version"} | {f.name for f in dataclasses.fields(Plan)}
    assert doc["spaces"][0]["name"] == "focal" and doc["spaces"][0]["params"] == plan.spaces[0].params
    assert doc["budget"]["epochs"] == plan.budget.epochs and doc["confirm"]["max_seeds"] == 12


def test_plan_reruns_the_saved_plan_with_a_new_study_id(workdir, tmp_path) -> None:
    plan = tune.preflight(["--space", "focal", "--data", "digits", "--counts", "3=20,8=60", "--seed", "3",
                           "--max-epochs", "4", "--no-resplit"])
    save_plan(plan, tmp_path / "plan.json")
    again = tune.preflight(["--plan", str(tmp_path / "plan.json"), "--max-concurrent", "2"])
    assert again.study_id != plan.study_id and again.study_id.startswith("focal-")
    assert again.resources.max_concurrent == 2
    assert dataclasses.replace(again, study_id=plan.study_id, resources=plan.resources) == plan
    assert not any(workdir.iterdir())


def test_plan_with_a_redacted_password_needs_the_tracking_uri(capsys, workdir, tmp_path) -> None:
    plan = dataclasses.replace(tune.preflight(["--space", "focal", "--data", "digits"]),
                               tracking_uri="http://user:pw@127.0.0.1:1")
    save_plan(plan, tmp_path / "plan.json")
    err = run_bad(["--plan", str(tmp_path / "plan.json")], capsys, workdir)
    assert err == ("error: --plan: the saved tracking URI http://user:***@127.0.0.1:1 had its password removed; give "
                   "--tracking-uri\n")


@pytest.mark.parametrize(("text", "message"), [
    ("{", r"--plan .*plan.json: not a plan \(malformed JSON: "),
    ("[]", r"--plan .*plan.json: not a plan of version 1 \(found version None\)"),
    ('{"version": 99}', r"--plan .*plan.json: not a plan of version 1 \(found version 99\)"),
    ('{"version": 1, "spaces": []}', r"--plan .*plan.json: spaces: expected a non-empty list"),
    ("[" * 100_000, r"--plan .*plan.json: not a plan \(malformed JSON: "),
])
def test_a_malformed_plan_file_is_one_line(text, message, capsys, workdir, tmp_path) -> None:
    (tmp_path / "plan.json").write_text(text)
    assert re.match(message, run_bad(["--plan", str(tmp_path / "plan.json")], capsys, workdir)[len("error: "):])


@pytest.fixture()
def stored_study(workdir) -> Plan:
    """A study of the focal space at 1:11 whose plan.json is in <storage>/<study id>/, as the runner leaves it."""
    plan = tune.preflight(["--space", "focal", "--data", "digits", "--ratio", "1:11", "--max-epochs", "5"])
    save_plan(plan, study_file(plan.storage, plan.study_id, PLAN_FILE))
    return plan


def test_resume_refuses_flags_that_change_the_study_naming_each(stored_study, capsys, workdir) -> None:
    before = _tree(workdir)
    assert tune.main(["--space", "focal", "--data", "digits", "--resume", "--ratio", "1:2", "--max-epochs", "6",
                      "--seed", "0"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: --resume: --max-epochs 6 differs from the study's 5; --ratio 1:2 differs from the study's "
                   "1:11 (resume with the study's flags, or start a new study)\n")
    assert _tree(workdir) == before


def test_resume_takes_the_stored_plan_and_new_resources(stored_study, workdir) -> None:
    plan = tune.preflight(["--space", "focal", "--resume", "--max-concurrent", "1", "--ratio", "1:11"])
    assert plan.resume and plan.study_id == stored_study.study_id and plan.resources.max_concurrent == 1
    assert (plan.data, plan.ratio, plan.budget, plan.spaces) == ("digits", stored_study.ratio, stored_study.budget,
                                                                 stored_study.spaces)


def test_resume_of_a_finished_study_says_so_and_changes_nothing(stored_study, capsys, workdir) -> None:
    mark_finished(stored_study.storage, stored_study.study_id)
    assert Path(study_file(stored_study.storage, stored_study.study_id, FINISHED_FILE)).is_file()
    before = _tree(workdir)
    assert tune.main(["--space", "focal", "--resume"]) == 0
    assert capsys.readouterr().out == (f"study {stored_study.study_id} is finished: nothing to resume (its summary is "
                                       f"in {workdir.resolve() / 'results' / 'focal'})\n")
    assert _tree(workdir) == before


def test_save_and_read_a_plan_through_a_uri(workdir, tmp_path) -> None:
    """Object storage (s3://) goes through pyarrow.fs; file:// takes the same path here."""
    plan = tune.preflight(["--space", "focal", "--data", "digits"])
    location = f"file://{tmp_path}/storage/{plan.study_id}/{PLAN_FILE}"
    assert read_plan(location) is None
    save_plan(plan, location)
    assert read_plan(location) == plan
    mark_finished(f"file://{tmp_path}/storage", plan.study_id)
    assert (tmp_path / "storage" / plan.study_id / FINISHED_FILE).is_file()


def test_source_weights_are_refused_on_the_animal_pairs_they_were_pretrained_on(tmp_path, capsys) -> None:
    from study.tune import main

    assert main(["--space", "transfer", "--data", "animals_horse_zebra", "--results-dir", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == ("error: transfer: weights 'source' were pretrained on the animals of --data "
                                       "animals_horse_zebra (animals_source holds every animal but cat and dog): use "
                                       "--data animals or another space\n")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name, counts", [("animals_horse_zebra", [140, 700]), ("animals_sheep_cow", [32, 700]),
                                          ("animals_bird_bear", [14, 700]), ("digits_1_7", [18, 91])])
def test_the_board_data_sets_ship_with_their_own_imbalance(tmp_path, name: str, counts: list[int]) -> None:
    from study.data import load_dataset

    ds = load_dataset(name, image_size=16, seed=0, ratio=None, counts=None, cache_dir=tmp_path)
    assert ds.train.counts(2) == counts and ds.minority == 0


def test_a_weights_file_with_foreign_keys_is_one_error_line_before_ray_starts(tmp_path) -> None:
    """It passes the torch-free checks (a real checkpoint), then fails the backbone's keys in the driver: exit 2,
    no trial retried four times, Ray never started (no storage written)."""
    import subprocess
    import sys

    import torch

    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "foreign.pt")
    (tmp_path / "mine.yaml").write_text(f"fixed: {{model: pretrained, weights: {tmp_path / 'foreign.pt'}, loss: ce}}\n")
    proc = subprocess.run([sys.executable, "-m", "study.tune", "--space", "mine", "--spaces-dir", str(tmp_path),
                           "--data", "digits", "--smoke", "--results-dir", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: weights {tmp_path / 'foreign.pt'} do not fit resnet18: 120 missing (e.g. bn1.bias, "
                     "bn1.num_batches_tracked, bn1.running_mean); 1 unexpected (e.g. encoder.weight)"]
    assert "Traceback" not in proc.stderr and not (tmp_path / "r" / "ray").exists()
