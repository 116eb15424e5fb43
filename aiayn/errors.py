"""The one kind of error a user's input can cause: the command line reports it in one line that
names the file, line, field or number at fault, with exit status 2, and never as a traceback."""
from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user (a file, a folder, a field, a number); the message names it."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; no update was applied and no checkpoint was written after it."""
