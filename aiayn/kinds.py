"""The registry of model kinds: every kind a run or checkpoint records (config.json's "kind"; a
translator's may name none), the verb that trains it, and what aiayn does with it. The code of each
part is named as "module:name" and imported when used, so this table imports nothing and every
verb, the server and the checkpoint store look kinds up here rather than branching on names."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from aiayn.errors import InputError

TRANSLATOR, MASKED_LM, CLASSIFIER, LM, VIT = "translator", "masked-lm", "classifier", "language-model", "vision-transformer"


@dataclass(frozen=True)
class Kind:
    """One kind of model: the verb that trains it, its training Task, the function that makes its
    server app ("": not served), the one that draws its attention for `aiayn attention` ("": none),
    and whether averaging (§6.1) rebuilds the model (a translator: its vocabulary files and shared
    matrix are written again) or averages the stored weights name by name."""

    name: str
    verb: str
    task: str
    app: str = ""
    attention: str = ""
    averaged_as_model: bool = False

    def part(self, field: str) -> Any:
        """The function or class `field` names, imported now."""
        module, _, name = getattr(self, field).partition(":")
        return getattr(importlib.import_module(module), name)


KINDS = {kind.name: kind for kind in (
    Kind(TRANSLATOR, "train", "aiayn.training.translation:TranslationTask", app="aiayn.serving.app:translator_app",
         attention="aiayn.commands.decoding:text_attention", averaged_as_model=True),
    Kind(MASKED_LM, "pretrain-mlm", "aiayn.family.classifier:MaskedLanguageModelTask"),
    Kind(CLASSIFIER, "train-classifier", "aiayn.family.classifier:ClassifierTask", app="aiayn.serving.app:classifier_app"),
    Kind(LM, "train-lm", "aiayn.family.lm:LanguageModelTask"),
    Kind(VIT, "train-vit", "aiayn.family.vit:DigitsTask", attention="aiayn.commands.decoding:image_attention"),
)}


def kind_named(name: Any, where: str) -> Kind:
    """The registered kind `name` (read from `where`, e.g. a config.json); InputError naming it else."""
    if not isinstance(name, str) or name not in KINDS:
        raise InputError(f"{where}: field 'kind' is {name!r}, not one of aiayn's kinds ({', '.join(KINDS)})")
    return KINDS[name]


def kind_trained_by(verb: str) -> Kind:
    """The kind a training verb makes."""
    return next(kind for kind in KINDS.values() if kind.verb == verb)


def kinds_with(field: str) -> list[str]:
    """The names of the kinds that have `field` (e.g. "app": the kinds aiayn serve takes)."""
    return [kind.name for kind in KINDS.values() if getattr(kind, field)]
