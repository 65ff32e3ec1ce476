"""Fixtures shared by the test modules (helpers that build models and media live in ``media_utils.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from media_utils import write_tones


@pytest.fixture
def tone_folder(tmp_path: Path) -> Callable[..., Path]:
    """A factory: ``tone_folder(name, freqs)`` writes a folder of sine tones under this test's tmp_path."""

    def make(name: str = "data", freqs=(200.0, 400.0, 600.0), **kw) -> Path:
        return write_tones(tmp_path / name, freqs, **kw)

    return make
