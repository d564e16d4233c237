"""Fixtures shared by the test modules."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def scratch_tmpdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Temporary files of this run's subprocesses go under pytest's base temp, which a green run deletes:
    trials killed on purpose (a removed node, a SIGKILLed driver) leave their 134 MB checkpoint temp dirs
    behind. Ray would follow TMPDIR too, so its sessions and sockets stay in /tmp (a short path)."""
    scratch = tmp_path_factory.mktemp("scratch")
    saved = {k: os.environ.get(k) for k in ("TMPDIR", "RAY_TMPDIR")}
    os.environ.update({"TMPDIR": str(scratch), "RAY_TMPDIR": os.environ.get("RAY_TMPDIR", "/tmp")})
    yield scratch
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture()
def one_thread():
    """Study trials run on one thread each; two threads on a shared 2-core machine only thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
