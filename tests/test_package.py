"""The entry points users reach for first, importable from the package top; `import aiayn` stays light."""
from __future__ import annotations

import subprocess
import sys


def test_translator_comes_from_the_top_and_import_aiayn_stays_light() -> None:
    code = ("import sys, aiayn\n"
            "assert 'aiayn.decoding.translator' not in sys.modules\n"
            "from aiayn import Translator\n"
            "from aiayn.decoding.translator import Translator as T\n"
            "assert Translator is T and 'Translator' in aiayn.__all__\n"
            "import aiayn.interop\n"
            "assert 'transformers' not in sys.modules and 'ctranslate2' not in sys.modules\n"
            "from aiayn.interop import export_ctranslate2, export_huggingface, import_marian, InteropError\n")
    subprocess.run([sys.executable, "-c", code], check=True)
