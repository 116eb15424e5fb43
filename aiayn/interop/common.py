"""What every conversion shares: the error it reports, the checks on the model it converts and on the folder it writes."""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from aiayn.data.moses import trained_on_moses_text
from aiayn.errors import InputError
from aiayn.files import check_output_dir


class InteropError(InputError):
    """A folder or config aiayn cannot convert, or an output it must not overwrite; the message
    names the file, field or folder at fault."""


def optional_module(name: str) -> ModuleType:
    """transformers or ctranslate2, which only the exports need (the `interop` extra)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise InteropError(f"this needs {name}: pip install 'aiayn[interop]'") from None


def refuse_moses_text(config: dict[str, Any], checkpoint: str | Path, to: str) -> None:
    """InteropError for a model of Moses text: another runtime's tokenizer, given raw text, would not make
    that text, and the converted model would translate otherwise than aiayn does."""
    if trained_on_moses_text(config):
        raise InteropError(f"{checkpoint}: trained on Moses-tokenised text (--moses-text), which {to}'s "
                           "SentencePiece tokenizer does not make from raw text; not converted")


def require_empty(out: Path) -> None:
    """Refuse an output that exists and is not an empty folder: a conversion never deletes a user's files."""
    check_output_dir(Path(out), "conversion", owned=lambda path: False)
