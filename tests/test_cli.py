"""The command line parses and dispatches."""
from __future__ import annotations

import re
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


VERBS = ["demo", "download", "prepare", "train", "translate", "evaluate", "attention", "serve", "export", "import", "pretrain-mlm",
         "train-classifier", "classify", "train-lm", "generate", "train-vit", "average", "plot", "params"]


def test_python_m_aiayn_lists_every_verb_in_order() -> None:
    result = subprocess.run([sys.executable, "-m", "aiayn", "--help"], capture_output=True, text=True, check=True)
    listed = [line.split()[0] for line in result.stdout.splitlines() if re.match(r"    \S", line)]
    assert listed == VERBS


def test_a_usage_error_is_one_line_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["no-such-verb"], ["train", "--warmup", "0", "--out", "run"], ["train-vit", "--out", "r", "--seed", "-1"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith("aiayn")
