"""Fixtures shared by the test modules."""

import pytest
import torch


@pytest.fixture()
def one_thread():
    """Study trials run on one thread each; two threads on a shared 2-core machine only thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
