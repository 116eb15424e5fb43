"""A run directory: created whole or not at all, and read back for `--resume`.

    RUN/config.json          model + training configuration
    RUN/tokenizer.model      the shared vocabulary (the prepared data's)
    RUN/data/                prepared data (aiayn.data.prepared), when the run was given raw files
    RUN/metrics.jsonl        one JSON record per log line and per validation
    RUN/checkpoints/step_N/  the last `keep_last` checkpoints (weights, tokenizer, optimizer, data
                             position, RNG states): `aiayn train --resume RUN` continues exactly
    RUN/checkpoints/best/    the checkpoint with the best validation BLEU
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from aiayn import checkpoint
from aiayn.data.corpus import require_file
from aiayn.data.moses import check_language, moses_languages
from aiayn.data.prepared import PreparedData, PrepareOptions, prepare
from aiayn.data.tokenizer import Tokenizer
from aiayn.errors import InputError
from aiayn.files import building, check_output_dir, holds_only, write_atomic
from aiayn.model import ModelConfig
from aiayn.training.config import TrainConfig

RUN_DATA = "data"  # where a run given raw files keeps its prepared data
# Everything aiayn writes into a run (`text` holds the demo's number words; curves.png is `aiayn plot`'s).
RUN_ENTRIES = {"config.json", "tokenizer.model", "metrics.jsonl", "checkpoints", RUN_DATA, "curves.png", "text"}


def say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def _record_step(line: str) -> float:
    """The step of a metrics.jsonl line; 0 for records of no step; infinity for a line torn by a kill."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return math.inf
    step = record.get("step", 0) if isinstance(record, dict) else math.inf
    return step if isinstance(step, (int, float)) else math.inf


class Metrics:
    """RUN/metrics.jsonl, appended to."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "metrics.jsonl"

    def record(self, **values: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(values) + "\n")

    def forget_after(self, step: int) -> None:
        """Drop the records of steps after `step` (a resumed run redoes them; plots would show them twice)."""
        if not self.path.is_file():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if _record_step(line) <= step]
        if len(kept) < len(lines):
            write_atomic(self.path, "".join(kept))


def is_run(path: Path) -> bool:
    """Whether `path` holds an aiayn training run (RUN/config.json with a model and a training
    config, a tokenizer) and nothing aiayn does not write there (so replacing it loses nothing)."""
    try:
        stored = checkpoint.read_config(path)
    except InputError:
        return False
    has_vocabulary = (path / "tokenizer.model").is_file() or isinstance(stored.get("task"), dict)  # a ViT has none
    return (isinstance(stored.get("model"), dict) and isinstance(stored.get("training"), dict)
            and has_vocabulary and holds_only(path, RUN_ENTRIES.__contains__))


def data_dir(run_dir: Path, config: TrainConfig) -> Path:
    return run_dir / config.data if not Path(config.data).is_absolute() else Path(config.data)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(manifest: dict[str, Any]) -> str:
    """What identifies prepared data for a run: its pairs and how they were made. The same corpus
    prepared with another max_length has the same vocabulary but other pairs, and a run resumed on
    it would replay or skip data."""
    return hashlib.sha256(json.dumps([manifest["train"], manifest["options"]], sort_keys=True).encode()).hexdigest()


def create_run(run_dir: Path, model_config: ModelConfig, config: TrainConfig, overwrite: bool = False,
               workers: int | None = None) -> tuple[ModelConfig, TrainConfig]:
    """A new run: its data prepared (or checked), its vocabulary and config written, all in a hidden
    folder that becomes RUN only when complete. Nothing is written before the input is known to be
    good; an existing run is replaced only with `overwrite`."""
    check_output_dir(run_dir, "run", is_run, overwrite, hint=", or continue it with `aiayn train --resume`")
    if config.data:
        if config.valid_src:
            raise InputError("with --data, the validation set is the prepared data's: give --valid-src and "
                             "--valid-tgt to `aiayn prepare`")
        data = PreparedData(config.data)  # checks the folder before anything is written
        data.tokenizer()  # and its tokenizer against the manifest
        if config.lowercase and not data.manifest["options"].get("lowercase"):
            raise InputError(f"lowercase: {config.data} was prepared without --lowercase (prepare it with it)")
        config = _moses_languages_of(data, config)
        prepared_with = (data.manifest["options"].get("bpe_dropout", 0.0), data.manifest["options"].get("segmentations", 1))
        if (config.bpe_dropout or config.segmentations > 1) and (config.bpe_dropout, config.segmentations) != prepared_with:
            raise InputError(f"bpe_dropout {config.bpe_dropout}, segmentations {config.segmentations}: {config.data} "
                             f"was prepared with {prepared_with[0]}, {prepared_with[1]} (the data decides them)")
        if config.average_last > 1 and data.valid_text() is None:
            raise InputError(f"--average-last {config.average_last}: nothing is validated to average ({config.data} "
                             "has no validation set)")
        config.check_batch_fits(data.manifest["options"]["max_length"])
        config = dataclasses.replace(config, data=str(Path(config.data).resolve()))
    else:
        if config.average_last > 1 and not config.valid_src:
            raise InputError(f"--average-last {config.average_last}: nothing is validated to average (give "
                             "--valid-src and --valid-tgt)")
        for path in filter(None, (config.train_src, config.train_tgt, config.valid_src, config.valid_tgt)):
            require_file(path)
    with building(run_dir, owned=is_run if overwrite else None) as staged:
        if not config.data:
            options = PrepareOptions(config.vocab_size, config.max_length, config.sample_sentences, config.seed, workers,
                                     config.lowercase, config.bpe_dropout, config.segmentations,
                                     moses_languages(config.moses_text, config.source_lang, config.target_lang))
            prepare(staged / RUN_DATA, config.train_src, config.train_tgt, config.valid_src, config.valid_tgt, options,
                    log=say)
            data = PreparedData(staged / RUN_DATA)
            config = dataclasses.replace(config, data=RUN_DATA)
        manifest = data.manifest
        config = dataclasses.replace(config, vocab_size=manifest["vocab_size"],
                                     lowercase=manifest["options"].get("lowercase", False),
                                     bpe_dropout=manifest["options"].get("bpe_dropout", 0.0),
                                     segmentations=manifest["options"].get("segmentations", 1),
                                     moses_text=bool(manifest["options"].get("moses_text")),
                                     max_length=manifest["options"]["max_length"])
        model_config = dataclasses.replace(model_config, vocab_size=manifest["vocab_size"])
        shutil.copyfile(data.tokenizer_path, staged / "tokenizer.model")
        train = manifest["train"]
        say(f"training data: {train['pairs']:,} pairs ({train['skipped']['empty']:,} skipped as empty, "
            f"{train['skipped']['too_long']:,} as longer than {config.max_length} subwords)")
        Metrics(staged).record(event="data", kept=train["pairs"], skipped_empty=train["skipped"]["empty"],
                               skipped_too_long=train["skipped"]["too_long"])
        write_atomic(staged / "config.json", json.dumps({"model": model_config.to_dict(),
                                                          "training": dataclasses.asdict(config),
                                                          "data_fingerprint": fingerprint(manifest)}, indent=1))
        data.close()
    return model_config, config


def _moses_languages_of(data: PreparedData, config: TrainConfig) -> TrainConfig:
    """`config` with the languages of data prepared with `moses_text`, which must be the run's."""
    options = data.manifest["options"]
    if "moses_text" not in options:
        if config.moses_text:
            raise InputError(f"moses_text: {config.data} was prepared without --moses-text (prepare it with it)")
        return config
    prepared, manifest = options["moses_text"], data.directory / "manifest.json"
    if not (isinstance(prepared, list) and len(prepared) == 2 and all(isinstance(lang, str) for lang in prepared)):
        raise InputError(f"{manifest}: damaged (options.moses_text is not two languages)")
    for lang in prepared:  # the Moses rules of both, before the run is made
        check_language(lang, f"{manifest}: damaged (options.moses_text)")
    for flag, given, lang in (("--source-lang", config.source_lang, prepared[0]),
                              ("--target-lang", config.target_lang, prepared[1])):
        if given not in (None, lang):
            raise InputError(f"{flag} {given}: {config.data} was prepared as Moses text in {lang}")
    return dataclasses.replace(config, source_lang=prepared[0], target_lang=prepared[1])


def load_run(run_dir: Path, data: str | None = None) -> tuple[Tokenizer, ModelConfig, TrainConfig]:
    """A run's tokenizer and configuration, checked; `data` points it at its prepared data moved
    elsewhere (which must have been prepared with the run's vocabulary)."""
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run directory")
    stored = checkpoint.read_config(run_dir)
    if "model" not in stored or "training" not in stored:
        raise InputError(f"{run_dir / 'config.json'}: not a training run's config (no model or training section)")
    model_config = checkpoint.model_config_of(stored, run_dir / "config.json")
    try:
        config = TrainConfig(**stored["training"])
    except TypeError as error:
        raise InputError(f"{run_dir / 'config.json'}: bad training config ({error})") from None
    except InputError as error:
        raise InputError(f"{run_dir / 'config.json'}: bad training config ({error})") from None
    tokenizer = checkpoint.load_tokenizer(run_dir / "tokenizer.model")
    if tokenizer.vocab_size != model_config.vocab_size:
        raise InputError(f"{run_dir / 'tokenizer.model'}: {tokenizer.vocab_size} pieces, but the run's model "
                         f"has vocab_size {model_config.vocab_size}")
    if data is not None:
        config = dataclasses.replace(config, data=str(Path(data).resolve()))
    if not config.data:
        raise InputError(f"{run_dir / 'config.json'}: the run names no prepared data (made by an older aiayn?); "
                         "prepare its corpus with `aiayn prepare` and pass --data")
    prepared = data_dir(run_dir, config)
    manifest = PreparedData(prepared).manifest
    if manifest["tokenizer_sha256"] != _sha256(run_dir / "tokenizer.model"):
        raise InputError(f"{prepared}: prepared with another vocabulary than {run_dir / 'tokenizer.model'}; "
                         "a run can only go on with the data it was started with")
    if stored.get("data_fingerprint", fingerprint(manifest)) != fingerprint(manifest):
        raise InputError(f"{prepared}: other pairs than the run was started with (prepared from other inputs or "
                         "with other options); a run can only go on with the data it was started with")
    config.check_batch_fits(manifest["options"]["max_length"])
    return tokenizer, model_config, config
