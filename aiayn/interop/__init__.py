"""Other toolkits' formats (not the paper's): export an aiayn checkpoint to CTranslate2 or to a
Hugging Face Marian folder, and import a Marian folder (as OPUS-MT models ship) as a checkpoint.

    from aiayn.interop import export_ctranslate2, export_huggingface, import_marian
    export_ctranslate2("runs/m30k", "m30k-ct2", quantization="int8")
    export_huggingface("runs/m30k", "m30k-hf")
    import_marian("opus-mt-de-en", "checkpoints/opus-mt-de-en")

`transformers` and `ctranslate2` (the `interop` extra) are imported only by the exports that need them.
"""
from aiayn.interop.common import InteropError
from aiayn.interop.ctranslate2 import export_ctranslate2, write_ctranslate2
from aiayn.interop.huggingface import export_huggingface, import_marian, marian_model

__all__ = ["InteropError", "export_ctranslate2", "export_huggingface", "import_marian", "marian_model",
           "write_ctranslate2"]
