"""What every conversion shares: the error it reports and the check on the folder it writes."""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

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


def require_empty(out: Path) -> None:
    """Refuse an output that exists and is not an empty folder: a conversion never deletes a user's files."""
    check_output_dir(Path(out), "conversion", owned=lambda path: False)
