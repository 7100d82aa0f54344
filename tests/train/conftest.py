"""Fixtures for the training tests: the training processes a test starts (none outlives it), and the smallest image
folder `cnnlab train` runs on."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..support.data import draw_noise_folder
from ..support.processes import Procs


@pytest.fixture
def procs():
    """Starts training processes (the worker script, `cnnlab`, torchrun) and kills every one at the test's end."""
    ps = Procs()
    yield ps
    ps.close()


@pytest.fixture
def noise_folder(tmp_path) -> Path:
    """An image folder of 3 classes x 12 grey 16x16 noise PNGs: the smallest data set `cnnlab train` runs on in a
    subprocess (for the mechanics of output and stopping, never for accuracy)."""
    return draw_noise_folder(tmp_path / "noise")
