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


def test_hangul_labels_are_drawn_with_an_installed_cjk_font(tmp_path) -> None:
    import warnings

    from matplotlib import font_manager
    from matplotlib.figure import Figure

    import torch
    from aiayn.evaluation.attention_plot import CJK_FONT_FILES, _heatmap, _label_fonts

    fonts = _label_fonts()
    installed = any(p.endswith(CJK_FONT_FILES) for p in font_manager.findSystemFonts())
    assert fonts[0] == "DejaVu Sans" and (len(fonts) > 1) == installed
    axis = Figure().subplots()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _heatmap(axis, torch.rand(2, 3), ["▁I", "▁am"], ["▁나는", "▁학생", "입니다"], "cross")
        axis.figure.savefig(tmp_path / "hangul.png")
    missing = [w for w in caught if "missing from font" in str(w.message)]
    assert (tmp_path / "hangul.png").stat().st_size > 0
    assert not missing or not installed  # with a CJK font on the system, every glyph has a font
