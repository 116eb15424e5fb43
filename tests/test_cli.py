"""The command line parses and dispatches."""
from __future__ import annotations

import subprocess
import sys

import pytest

from aiayn.cli import main


def test_params_prints_a_breakdown_and_the_paper_comparison(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["params", "--preset", "base", "--vocab-size", "37000"]) == 0
    out = capsys.readouterr().out
    for component in ("embeddings", "encoder", "decoder", "total"):
        assert component in out
    assert "18,944,000" in out  # 37000 x 512, counted once although shared three ways
    assert "paper: 65M" in out


def test_help_lists_the_verbs() -> None:
    result = subprocess.run([sys.executable, "-m", "aiayn.cli", "--help"], capture_output=True, text=True, check=True)
    assert "params" in result.stdout
