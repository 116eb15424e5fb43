"""Pictures are drawn without pyplot: importing or drawing never changes the user's backend."""
from __future__ import annotations

import subprocess
import sys


def test_drawing_leaves_the_matplotlib_backend_alone(tmp_path) -> None:
    script = f"""
import json, matplotlib
matplotlib.use("svg")
from aiayn.evaluation import attention_plot, plots
(p := __import__("pathlib").Path({str(tmp_path)!r})).joinpath("metrics.jsonl").write_text(
    json.dumps(dict(step=1, train_loss=2.0, train_nll=1.9, lr=1e-4)) + "\\n")
plots.plot_run(p)
print(matplotlib.get_backend())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg"
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_the_library_needs_no_test_or_bench_packages() -> None:
    # aiayn[serve] installs fastapi and uvicorn, not httpx: no module of the package may need it.
    script = """
import sys, pkgutil, importlib, aiayn
sys.modules["httpx"] = None  # importing it now fails
for module in pkgutil.walk_packages(aiayn.__path__, "aiayn."):
    if module.name != "aiayn.__main__":  # that one runs the command line
        importlib.import_module(module.name)
"""
    subprocess.run([sys.executable, "-c", script], check=True)
