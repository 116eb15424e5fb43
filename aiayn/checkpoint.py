"""Checkpoints: a directory that maps raw text to raw text on its own.

    model.safetensors          weights (safetensors: loading never runs pickled code)
    config.json                {"model": ModelConfig, ...}
    tokenizer.model            the SentencePiece model (imported Marian models: source.spm,
                               target.spm and vocab.json instead, aiayn.data.marian_vocab)
    training_state.json        step, data position, ...      (training checkpoints only)
    training_state.safetensors optimizer moments, RNG states (training checkpoints only)

A checkpoint is written into a hidden sibling directory and renamed into place, so a process
killed at any moment leaves either the complete new checkpoint or none; replacing one (`best`,
`average`) swaps the new copy in atomically (aiayn.files). A run directory keeps its checkpoints
under `checkpoints/`.
"""
from __future__ import annotations

import itertools
import json
import re
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from aiayn.data.marian_vocab import AnyTokenizer, load_tokenizer_files, save_tokenizer_files
from aiayn.data.tokenizer import Tokenizer
from aiayn.errors import InputError
from aiayn.files import building, holds_only, read_json_object, recover_hidden, remove_tree
from aiayn.kinds import TRANSLATOR, Kind, kind_named
from aiayn.model import ModelConfig, Transformer

M = TypeVar("M", bound=torch.nn.Module)
STEP_DIR = re.compile(r"^step_(\d+)$")
AVERAGE_DIR, BEST_DIR = "average", "best"


class CheckpointError(InputError):
    """A checkpoint that is missing, incomplete or corrupt; the message names the file."""


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1), encoding="utf-8")  # made durable with its folder (building)


def save_checkpoint(
    directory: Path, model: torch.nn.Module, tokenizer: AnyTokenizer | None, extra_config: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None, state_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary directory + rename) and return its path. An
    existing checkpoint at `directory` is replaced (swapped atomically); anything else there is not.
    `model` is a Transformer or one of its descendants (aiayn.model.family), with a `config`."""
    directory = Path(directory)
    with building(directory, owned=is_checkpoint) as partial:
        save_model(model, str(partial / "model.safetensors"))  # writes a shared matrix once
        _write_json(partial / "config.json", {"model": model.config.to_dict(), **(extra_config or {})})
        if tokenizer is not None:  # a vision model has none
            save_tokenizer_files(tokenizer, partial)
        if state is not None:
            _write_json(partial / "training_state.json", state)
            save_file({k: v.contiguous() for k, v in (state_tensors or {}).items()},
                      str(partial / "training_state.safetensors"))
    return directory


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, CheckpointError)


def read_config(directory: Path) -> dict[str, Any]:
    return _read_json(Path(directory) / "config.json")


CHECKPOINT_FILES = {"model.safetensors", "config.json", "tokenizer.model", "training_state.json",
                    "training_state.safetensors", "source.spm", "target.spm", "vocab.json"}


def is_checkpoint(path: Path) -> bool:
    """Whether `path` is an aiayn checkpoint directory: weights, a config with a valid model, and
    nothing that aiayn does not write there (so replacing it loses nothing of anyone's)."""
    try:
        config = read_config(path)
        ModelConfig.from_dict(config["model"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return False
    return (path / "model.safetensors").is_file() and holds_only(path, CHECKPOINT_FILES.__contains__)


def model_config_of(config: dict[str, Any], config_path: Path) -> ModelConfig:
    try:
        return ModelConfig.from_dict(config["model"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{config_path}: bad model config ({error})") from None


def load_tokenizer(path: Path) -> Tokenizer:
    try:
        return Tokenizer.load(path)
    except (OSError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{path}: missing or corrupt ({error})") from None


def kind_of(path: str | Path) -> Kind:
    """The registered kind (aiayn.kinds) of the model a checkpoint (or run directory) holds;
    translators' configs name none. CheckpointError naming config.json for any other value."""
    directory = resolve_checkpoint(path)
    return _kind_in(read_config(directory), directory)


def _kind_in(config: dict[str, Any], directory: Path) -> Kind:
    try:
        return kind_named(config.get("kind", TRANSLATOR), str(directory / "config.json"))
    except InputError as error:
        raise CheckpointError(str(error)) from None


def open_checkpoint(path: str | Path, kind: str, announce: bool = False) -> tuple[Path, dict[str, Any], ModelConfig]:
    """A checkpoint of `kind` (or a run directory's, as resolve_checkpoint picks it): its directory,
    its config and its ModelConfig; CheckpointError naming the file else."""
    directory = resolve_checkpoint(path, announce=announce)
    config = read_config(directory)
    found = _kind_in(config, directory).name
    if found != kind:
        raise CheckpointError(f"{directory / 'config.json'}: a {found} checkpoint, not a {kind}")
    return directory, config, model_config_of(config, directory / "config.json")


def check_vocabulary(tokenizer: AnyTokenizer, model_config: ModelConfig, directory: Path) -> None:
    """The tokenizer must be the model's: as many pieces as its vocabulary."""
    if tokenizer.vocab_size != model_config.vocab_size:
        vocabulary = "tokenizer.model" if isinstance(tokenizer, Tokenizer) else "vocab.json"
        raise CheckpointError(f"{directory / vocabulary}: {tokenizer.vocab_size} pieces, but "
                              f"{directory / 'config.json'} says vocab_size {model_config.vocab_size}; "
                              "the tokenizer does not belong to this model")


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[Transformer, AnyTokenizer, dict[str, Any]]:
    """Model (in eval mode), tokenizer and config of a translator's checkpoint or run directory."""
    directory, config, model_config = open_checkpoint(path, TRANSLATOR)
    try:
        tokenizer = load_tokenizer_files(directory)
    except (OSError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{directory}: tokenizer missing or corrupt ({error})") from None
    check_vocabulary(tokenizer, model_config, directory)
    return load_weights(Transformer(model_config), directory).to(device), tokenizer, config


def load_weights(model: M, directory: Path) -> M:
    """`model` (in eval mode) with the weights of directory/model.safetensors, which must fit it exactly."""
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    try:
        missing, unexpected = load_model(model, str(weights), strict=False)
    except (SafetensorError, RuntimeError, OSError) as error:
        raise CheckpointError(f"{weights}: corrupt or does not fit the config ({error})") from None
    if missing or unexpected:
        raise CheckpointError(f"{weights}: weights do not match the config "
                              f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    return model.eval()


def load_training_state(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    state = _read_json(directory / "training_state.json")
    tensors_path = directory / "training_state.safetensors"
    try:
        return state, load_file(str(tensors_path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{tensors_path}: missing or corrupt ({error})") from None


def step_checkpoints(run_dir: Path) -> list[Path]:
    """The complete step checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def step_of(path: Path) -> int:
    return int(STEP_DIR.match(path.name).group(1))


def recover_checkpoints(run_dir: Path) -> None:
    """After a writer was killed: drop its partial checkpoints, restore a replaced one whose
    successor never arrived (see aiayn.files.building)."""
    recover_hidden(Path(run_dir) / "checkpoints")


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Keep the last `keep` step checkpoints; each older one is renamed away before it is deleted,
    so a kill mid-delete never leaves a half-deleted directory under a checkpoint's name."""
    for old in step_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        remove_tree(old)


def _average_unusable(root: Path) -> str | None:
    """Why checkpoints/average should not be used (it predates the run's last step checkpoint, or
    cannot be read), or None."""
    try:
        config = read_config(root / AVERAGE_DIR)
    except CheckpointError as error:
        return str(error)
    steps = step_checkpoints(root.parent)
    if not steps:
        return None
    # Averages written before aiayn recorded "step" name their sources.
    sources = [STEP_DIR.match(Path(p).name) for p in config.get("averaged_from", [])]
    averaged_up_to = config.get("step", max((int(m.group(1)) for m in sources if m), default=None))
    if not isinstance(averaged_up_to, int) or averaged_up_to < step_of(steps[-1]):
        return f"it was averaged up to step {averaged_up_to}, and the run has reached {steps[-1].name} since"
    return None


def resolve_checkpoint(path: str | Path, announce: bool = False) -> Path:
    """A checkpoint directory as given, or for a run directory its averaged (unless older than the
    last step checkpoint), best or last checkpoint, in that order of preference."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    root = path / "checkpoints"
    candidates = [root / BEST_DIR, *reversed(step_checkpoints(path))]
    if (root / AVERAGE_DIR).is_dir():
        unusable = _average_unusable(root)
        if unusable is None:
            candidates.insert(0, root / AVERAGE_DIR)
        elif announce:
            print(f"not using {root / AVERAGE_DIR}: {unusable}", file=sys.stderr)
    for candidate in candidates:
        if candidate.is_dir():
            if announce:
                print(f"using checkpoint {candidate}", file=sys.stderr, flush=True)  # stdout may carry output
            return candidate
    raise CheckpointError(f"{path}: no checkpoint found (looked for checkpoints/{AVERAGE_DIR}, "
                          f"checkpoints/{BEST_DIR} and checkpoints/step_*)")


def mean_state(states: Iterable[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """§6.1's average: the element-wise mean of state dicts, summed in float64 and returned in the
    first one's dtypes. The states are read one at a time, so each may be loaded as it is needed."""
    total, dtypes, count = None, None, 0
    for state in states:
        if total is None:
            total = {k: v.double().clone() for k, v in state.items()}
            dtypes = {k: v.dtype for k, v in state.items()}
        else:
            for k, v in state.items():
                total[k] += v.double()
        count += 1
    if total is None:
        raise ValueError("no states to average")
    return {k: (v / count).to(dtypes[k]) for k, v in total.items()}


def average_checkpoints(paths: list[Path], out: Path) -> Path:
    """§6.1: a model whose weights are the mean of several checkpoints' weights."""
    if not paths:
        raise CheckpointError("no checkpoints to average")
    if not _kind_in(read_config(paths[0]), paths[0]).averaged_as_model:
        return _average_weights(paths, out)
    model, tokenizer, config = load_checkpoint(paths[0])

    def others() -> Iterator[dict[str, torch.Tensor]]:
        for path in paths[1:]:
            other, _, other_config = load_checkpoint(path)
            if other_config["model"] != config["model"]:
                raise CheckpointError(f"{path}: model config differs from {paths[0]}; cannot average")
            yield other.state_dict()

    model.load_state_dict(mean_state(itertools.chain([model.state_dict()], others())))
    extra = {k: v for k, v in config.items() if k not in ("model", "step", "valid_bleu")}
    extra["averaged_from"] = [str(p) for p in paths]
    steps = [step_of(p) for p in paths if STEP_DIR.match(p.name)]
    if steps:
        extra["step"] = max(steps)
    return save_checkpoint(out, model, tokenizer, extra)


def _average_weights(paths: list[Path], out: Path) -> Path:
    """§6.1's average for a descendant's checkpoints (aiayn.model.family): their weights as stored,
    averaged name by name, with the first one's config and vocabulary."""
    config = read_config(paths[0])

    def states() -> Iterator[dict[str, torch.Tensor]]:
        for path in paths:
            other = read_config(path)
            if (other.get("model"), other.get("kind")) != (config.get("model"), config.get("kind")):
                raise CheckpointError(f"{path}: model config differs from {paths[0]}; cannot average")
            try:
                yield load_file(str(path / "model.safetensors"))
            except (SafetensorError, OSError) as error:
                raise CheckpointError(f"{path / 'model.safetensors'}: missing or corrupt ({error})") from None

    mean = mean_state(states())
    extra = {"averaged_from": [str(p) for p in paths]}
    steps = [step_of(p) for p in paths if STEP_DIR.match(p.name)]
    if steps:
        extra["step"] = max(steps)
    with building(Path(out), owned=is_checkpoint) as partial:
        save_file({k: v.contiguous() for k, v in mean.items()}, str(partial / "model.safetensors"),
                  metadata={"format": "pt"})
        _write_json(partial / "config.json", {**config, **extra})
        if (paths[0] / "tokenizer.model").is_file():
            shutil.copyfile(paths[0] / "tokenizer.model", partial / "tokenizer.model")
    return Path(out)
