"""§5: training by teacher forcing, from raw parallel text to checkpoints that translate raw text.

A run directory holds everything:

    RUN/config.json          model + training configuration
    RUN/metrics.jsonl        one JSON record per log line and per validation
    RUN/checkpoints/step_N/  the last `keep_last` checkpoints (weights, tokenizer, optimizer, data
                             position, RNG states): `aiayn train --resume RUN` continues exactly
    RUN/checkpoints/best/    the checkpoint with the best validation BLEU
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from aiayn import checkpoint
from aiayn.data.batching import TokenBatches, collate
from aiayn.data.corpus import CorpusError, FilterReport, filter_pairs, read_parallel
from aiayn.data.tokenizer import Tokenizer
from aiayn.decoding.translator import Translator
from aiayn.errors import InputError
from aiayn.evaluation.bleu import bleu
from aiayn.files import check_output_dir, install_dir, remove_tree, staging_path, write_atomic
from aiayn.model import ModelConfig, Transformer
from aiayn.runtime import keep_freed_memory
from aiayn.training.loss import label_smoothed_loss
from aiayn.training.schedule import learning_rate


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; no update was applied and no checkpoint was written after it."""


@dataclass
class TrainConfig:
    """Every training hyper-parameter; saved in RUN/config.json, so `--resume` needs only RUN."""

    train_src: str = ""
    train_tgt: str = ""
    valid_src: str | None = None
    valid_tgt: str | None = None
    source_lang: str | None = None
    target_lang: str | None = None
    vocab_size: int = 8000  # shared BPE vocabulary learned on source + target training text
    max_length: int = 250  # subword tokens per side; longer pairs are skipped and counted
    batch_tokens: int = 8000  # source + target tokens per batch, padding included (§5.1)
    accumulate: int = 1  # batches per optimizer step (an effective batch larger than memory holds)
    label_smoothing: float = 0.1  # §5.4
    warmup_steps: int = 4000  # §5.3
    lr_scale: float = 1.0  # multiplies the §5.3 learning rate
    adam_beta1: float = 0.9  # §5.3
    adam_beta2: float = 0.98
    adam_eps: float = 1e-9
    clip_norm: float = 0.0  # 0: no gradient clipping (the paper has none)
    max_steps: int | None = None
    max_epochs: int | None = None
    time_budget_s: float | None = None  # seconds of training steps (validation not counted)
    eval_every: int = 500
    bleu_sentences: int | None = None  # validate BLEU on the first N validation sentences (None: all)
    save_every: int = 500
    keep_last: int = 5
    log_every: int = 10
    seed: int = 1
    device: str = "cpu"
    bf16: bool = False  # bfloat16 autocast for matrix products (CPU with avx512_bf16, or GPU)
    compile: bool = False  # torch.compile the model

    def __post_init__(self) -> None:
        if not (self.max_steps or self.max_epochs or self.time_budget_s):
            raise InputError("no stopping rule: give --max-steps, --max-epochs or --time-budget")
        at_least_one = ("vocab_size", "max_length", "batch_tokens", "accumulate", "warmup_steps", "eval_every",
                        "save_every", "keep_last", "log_every")
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_steps", "max_epochs", "time_budget_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InputError(f"{name} must not be negative, got {value}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise InputError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not (self.lr_scale > 0 and 0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1 and self.adam_eps > 0):
            raise InputError("lr_scale and adam_eps must be positive, adam betas in [0, 1)")
        # Every kept pair (up to max_length subwords a side, plus <eos>) must fit in one batch.
        if self.batch_tokens < 2 * (self.max_length + 1):
            raise InputError(f"batch_tokens {self.batch_tokens} is too small for max_length {self.max_length}: "
                             f"a pair can take 2 x ({self.max_length} + 1) = {2 * (self.max_length + 1)} tokens")


@dataclass
class Position:
    """Where training stands: resuming restores exactly this (plus weights, optimizer and RNG)."""

    step: int = 0  # optimizer updates done
    epoch: int = 0  # epoch of the next batch
    batch: int = 0  # index of the next batch within that epoch
    tokens: int = 0  # target tokens trained on
    train_seconds: float = 0.0  # time in training steps so far
    best_bleu: float = -1.0


def _record_step(line: str) -> float:
    """The step of a metrics.jsonl line; 0 for records of no step; infinity for a line torn by a kill."""
    try:
        return json.loads(line).get("step", 0)
    except json.JSONDecodeError:
        return math.inf


class Logger:
    """Metrics to RUN/metrics.jsonl (appended) and short lines to stderr."""

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

    @staticmethod
    def say(message: str) -> None:
        tqdm.write(message, file=sys.stderr)


@dataclass
class TrainingData:
    """Encoded training pairs (both sides without <eos>) and what filtering skipped."""

    src_ids: list[list[int]]
    tgt_ids: list[list[int]]
    report: FilterReport


def read_training_text(config: TrainConfig) -> tuple[list[str], list[str]]:
    src, tgt = read_parallel(config.train_src, config.train_tgt)
    if not src:
        raise CorpusError(f"{config.train_src}: empty corpus")
    return src, tgt


def encode_training_data(src: list[str], tgt: list[str], tokenizer: Tokenizer, config: TrainConfig) -> TrainingData:
    """Encode and filter the training pairs; InputError if none is left."""
    src_ids, tgt_ids = tokenizer.encode(src), tokenizer.encode(tgt)
    keep, report = filter_pairs(src_ids, tgt_ids, config.max_length, source_name=config.train_src)
    if not keep:
        raise CorpusError(f"{config.train_src}: every pair was filtered out ({report.empty} with an empty side, "
                          f"{report.too_long} longer than max_length {config.max_length})")
    return TrainingData([src_ids[i] for i in keep], [tgt_ids[i] for i in keep], report)


def load_validation_data(config: TrainConfig) -> tuple[list[str], list[str]] | None:
    if not (config.valid_src and config.valid_tgt):
        return None
    src, tgt = read_parallel(config.valid_src, config.valid_tgt)
    if not any(s.strip() and t.strip() for s, t in zip(src, tgt)):
        raise CorpusError(f"{config.valid_src}: no validation pair with text on both sides")
    return src, tgt


def learn_vocabulary(src: list[str], tgt: list[str], config: TrainConfig) -> Tokenizer:
    try:
        return Tokenizer.train(src + tgt, config.vocab_size)
    except RuntimeError as error:  # SentencePiece refuses e.g. a vocabulary smaller than the characters seen
        raise InputError(f"vocab_size {config.vocab_size}: SentencePiece cannot learn it on "
                         f"{config.train_src} + {config.train_tgt} ({str(error).splitlines()[-1]})") from None


def is_run(path: Path) -> bool:
    """Whether `path` holds an aiayn training run (RUN/config.json with a model and a training config)."""
    try:
        stored = checkpoint.read_config(path)
    except InputError:
        return False
    return "model" in stored and "training" in stored


def prepare_run(run_dir: Path, model_config: ModelConfig, config: TrainConfig,
                overwrite: bool = False) -> tuple[Tokenizer, ModelConfig, TrainingData]:
    """A new run: check everything, learn the shared vocabulary, then write RUN/config.json and
    the tokenizer into a hidden folder that becomes RUN only when complete. Nothing is written
    before the input is known to be good; an existing run is replaced only with `overwrite`."""
    check_output_dir(run_dir, "run", is_run, overwrite, hint=", or --resume to continue it")
    load_validation_data(config)
    src, tgt = read_training_text(config)
    started = time.perf_counter()
    tokenizer = learn_vocabulary(src, tgt, config)
    data = encode_training_data(src, tgt, tokenizer, config)
    Logger.say(f"learned a shared BPE vocabulary of {tokenizer.vocab_size} pieces on {len(src)} + {len(tgt)} "
               f"sentences and encoded them in {time.perf_counter() - started:.0f} s")
    model_config = dataclasses.replace(model_config, vocab_size=tokenizer.vocab_size)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = staging_path(run_dir)
    staged.mkdir()
    try:
        tokenizer.save(staged / "tokenizer.model")
        write_atomic(staged / "config.json", json.dumps({"model": model_config.to_dict(),
                                                          "training": dataclasses.asdict(config)}, indent=1))
        install_dir(staged, run_dir)
    except BaseException:
        if staged.exists():
            remove_tree(staged)
        raise
    return tokenizer, model_config, data


def load_run(run_dir: Path) -> tuple[Tokenizer, ModelConfig, TrainConfig]:
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
    tokenizer = checkpoint.load_tokenizer(run_dir / "tokenizer.model")
    if tokenizer.vocab_size != model_config.vocab_size:
        raise InputError(f"{run_dir / 'tokenizer.model'}: {tokenizer.vocab_size} pieces, but the run's model "
                         f"has vocab_size {model_config.vocab_size}")
    return tokenizer, model_config, config


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam's per-parameter state as flat named tensors, for safetensors."""
    tensors = {}
    for index, parameter in enumerate(p for group in optimizer.param_groups for p in group["params"]):
        for name, value in optimizer.state.get(parameter, {}).items():
            tensors[f"optimizer.{index}.{name}"] = value.detach().cpu()
    return tensors


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    for index, parameter in enumerate(p for group in optimizer.param_groups for p in group["params"]):
        prefix = f"optimizer.{index}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if state:
            optimizer.state[parameter] = {k: v.to(parameter.device) if v.dim() else v for k, v in state.items()}


class Trainer:
    def __init__(self, run_dir: Path, model: Transformer, tokenizer: Tokenizer, config: TrainConfig,
                 data: TrainingData | None = None):
        self.run_dir = run_dir
        self.config = config
        keep_freed_memory()
        self.device = torch.device(config.device)
        self.model = model.to(self.device)
        self.forward = torch.compile(self.model, dynamic=True) if config.compile else self.model
        self.tokenizer = tokenizer
        self.log = Logger(run_dir)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.0, betas=(config.adam_beta1, config.adam_beta2),
                                          eps=config.adam_eps)
        self.position = Position()
        self._use_data(data or encode_training_data(*read_training_text(config), tokenizer, config))

    # ------------------------------------------------------------------ data
    def _use_data(self, data: TrainingData) -> None:
        c, report = self.config, data.report
        if not self.run_dir.joinpath("metrics.jsonl").exists():
            self.log.say(f"training data: {report}" + (f" (e.g. {'; '.join(report.examples)})" if report.examples else ""))
            self.log.record(event="data", kept=report.kept, skipped_empty=report.empty, skipped_too_long=report.too_long)
        self.src_ids, self.tgt_ids = data.src_ids, data.tgt_ids
        self.batches = TokenBatches([(len(s) + 1, len(t) + 1) for s, t in zip(self.src_ids, self.tgt_ids)],
                                    c.batch_tokens, seed=c.seed)
        self.epoch_lengths: dict[int, int] = {}  # batches per epoch: it varies with the random tie-breaks
        self.valid = load_validation_data(c)

    def _batches_in(self, epoch: int) -> int:
        if epoch not in self.epoch_lengths:
            self.epoch_lengths[epoch] = len(self.batches.epoch(epoch))
        return self.epoch_lengths[epoch]

    def _batch_stream(self) -> Iterator[tuple[int, int, list[int]]]:
        """(epoch, index, pair indices) from the saved position on, epoch after epoch."""
        epoch, index = self.position.epoch, self.position.batch
        while True:
            order = self.batches.epoch(epoch)
            self.epoch_lengths[epoch] = len(order)
            for i in range(index, len(order)):
                yield epoch, i, order[i]
            epoch, index = epoch + 1, 0

    def _epoch_progress(self) -> float:
        """Epochs done, with the fraction of the current one (for logs and the progress bar)."""
        p = self.position
        return p.epoch + p.batch / self._batches_in(p.epoch)

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> Path:
        p = self.position
        rng = {"rng.torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        path = checkpoint.save_checkpoint(
            self.run_dir / "checkpoints" / f"step_{p.step:08d}", self.model, self.tokenizer,
            extra_config=self._extra_config(), state=dataclasses.asdict(p),
            state_tensors={**optimizer_tensors(self.optimizer), **rng})
        checkpoint.prune_checkpoints(self.run_dir, self.config.keep_last)
        return path

    def _extra_config(self) -> dict[str, Any]:
        return {"training": dataclasses.asdict(self.config),
                "languages": {"source": self.config.source_lang, "target": self.config.target_lang}}

    def resume(self) -> None:
        checkpoint.recover_checkpoints(self.run_dir)
        found = checkpoint.step_checkpoints(self.run_dir)
        if not found:
            self.log.say(f"no checkpoint in {self.run_dir}: starting from step 0")
            return
        latest = found[-1]
        model, _, _ = checkpoint.load_checkpoint(latest, self.device)
        self.model.load_state_dict(model.state_dict())
        state, tensors = checkpoint.load_training_state(latest)
        self.position = Position(**state)
        restore_optimizer(self.optimizer, tensors)
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.log.forget_after(self.position.step)
        self.log.say(f"resumed from {latest} (step {self.position.step}, epoch {self.position.epoch}, "
                     f"batch {self.position.batch})")

    # ------------------------------------------------------------------ one step
    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16)

    def train_step(self, batch_ids: list[list[int]]) -> tuple[float, float, int]:
        """One optimizer update over `accumulate` batches; returns (loss, nll) per token and tokens."""
        batches = [collate([self.src_ids[i] for i in ids], [self.tgt_ids[i] for i in ids]).to(self.device)
                   for ids in batch_ids]
        total_tokens = sum(b.n_target_tokens for b in batches)
        smoothed_sum = nll_sum = 0.0
        for batch in batches:
            with self._autocast():
                logits = self.forward(batch.src, batch.tgt_in)
            sums = label_smoothed_loss(logits, batch.tgt_out, self.model.config.pad_id, self.config.label_smoothing)
            (sums.smoothed / max(total_tokens, 1)).backward()
            smoothed_sum += sums.smoothed.item()
            nll_sum += sums.nll.item()
        if not math.isfinite(smoothed_sum):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(f"loss is {smoothed_sum} at step {self.position.step + 1} "
                                   f"(epoch {self.position.epoch}, batch {self.position.batch}); no update was applied")
        if self.config.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_norm)
        lr = self.current_lr(self.position.step + 1)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return smoothed_sum / max(total_tokens, 1), nll_sum / max(total_tokens, 1), total_tokens

    def current_lr(self, step: int) -> float:
        return learning_rate(step, self.model.config.d_model, self.config.warmup_steps, self.config.lr_scale)

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        assert self.valid is not None
        self.model.eval()
        src_text, tgt_text = self.valid
        src_ids, tgt_ids = self.tokenizer.encode(src_text), self.tokenizer.encode(tgt_text)
        keep = [i for i, (s, t) in enumerate(zip(src_ids, tgt_ids)) if s and t]
        lengths = [(len(src_ids[i]) + 1, len(tgt_ids[i]) + 1) for i in keep]
        smoothed = nll = tokens = 0.0
        for ids in TokenBatches(lengths, max(self.config.batch_tokens, max(a + b for a, b in lengths))).epoch(0):
            batch = collate([src_ids[keep[i]] for i in ids], [tgt_ids[keep[i]] for i in ids]).to(self.device)
            with self._autocast():
                logits = self.model(batch.src, batch.tgt_in)
            sums = label_smoothed_loss(logits, batch.tgt_out, self.model.config.pad_id, self.config.label_smoothing)
            smoothed, nll, tokens = smoothed + sums.smoothed.item(), nll + sums.nll.item(), tokens + sums.tokens
        n = self.config.bleu_sentences or len(src_text)
        with self._autocast():
            hypotheses = Translator(self.model, self.tokenizer).translate(src_text[:n], beam=1)
        self.model.train()
        score = bleu(hypotheses, tgt_text[:n])
        return {"valid_loss": smoothed / tokens, "valid_nll": nll / tokens, "valid_ppl": math.exp(nll / tokens),
                "valid_bleu": score.score, "bleu_signature": score.signature}

    # ------------------------------------------------------------------ the loop
    def _done(self) -> bool:
        c, p = self.config, self.position
        return bool((c.max_steps and p.step >= c.max_steps) or (c.max_epochs and p.epoch >= c.max_epochs)
                    or (c.time_budget_s and p.train_seconds >= c.time_budget_s))

    def _fraction_done(self) -> float:
        c, p = self.config, self.position
        fractions = [p.step / c.max_steps if c.max_steps else 0.0,
                     self._epoch_progress() / c.max_epochs if c.max_epochs else 0.0,
                     p.train_seconds / c.time_budget_s if c.time_budget_s else 0.0]
        return min(1.0, max(fractions))

    def run(self) -> Position:
        c, p = self.config, self.position
        self.model.train()
        stream = self._batch_stream()
        # Redraw often on a terminal, rarely into a log file.
        bar = tqdm(total=1000, file=sys.stderr, dynamic_ncols=True, leave=True, mininterval=0.5 if sys.stderr.isatty() else 30,
                   bar_format="{percentage:3.0f}%|{bar:20}| {elapsed}<{remaining} {postfix}", initial=int(1000 * self._fraction_done()))
        window_tokens, window_seconds, window_loss, window_nll, window_steps = 0, 0.0, 0.0, 0.0, 0
        while not self._done():
            started = time.perf_counter()
            group = [next(stream) for _ in range(c.accumulate)]
            loss, nll, tokens = self.train_step([ids for _, _, ids in group])
            seconds = time.perf_counter() - started
            last_epoch, last_index, _ = group[-1]
            following = ((last_epoch, last_index + 1) if last_index + 1 < self._batches_in(last_epoch)
                         else (last_epoch + 1, 0))
            p.step, p.tokens, p.train_seconds = p.step + 1, p.tokens + tokens, p.train_seconds + seconds
            p.epoch, p.batch = following
            window_tokens, window_seconds = window_tokens + tokens, window_seconds + seconds
            window_loss, window_nll, window_steps = window_loss + loss, window_nll + nll, window_steps + 1
            bar.update(int(1000 * self._fraction_done()) - bar.n)
            if p.step % c.log_every == 0 or self._done():
                record = dict(step=p.step, epoch=round(self._epoch_progress(), 3),
                              train_loss=window_loss / window_steps, train_nll=window_nll / window_steps,
                              train_ppl=math.exp(window_nll / window_steps), lr=self.current_lr(p.step),
                              tokens_per_s=window_tokens / window_seconds, train_seconds=p.train_seconds)
                self.log.record(**record)
                bar.set_postfix_str(f"step {p.step} loss {record['train_loss']:.3f} ppl {record['train_ppl']:.1f} "
                                    f"{record['tokens_per_s']:,.0f} tok/s lr {record['lr']:.2e}", refresh=False)
                window_tokens, window_seconds, window_loss, window_nll, window_steps = 0, 0.0, 0.0, 0.0, 0
            if self.valid and (p.step % c.eval_every == 0 or self._done()):
                self._validate_and_keep_best()
            if p.step % c.save_every == 0 or self._done():
                self.save()
        bar.close()
        return p

    def _validate_and_keep_best(self) -> None:
        p = self.position
        metrics = self.validate()
        self.log.record(step=p.step, train_seconds=p.train_seconds, **metrics)
        self.log.say(f"step {p.step}: valid loss {metrics['valid_loss']:.3f}, ppl {metrics['valid_ppl']:.2f}, "
                     f"BLEU {metrics['valid_bleu']:.2f} (greedy, sacreBLEU)")
        if metrics["valid_bleu"] > p.best_bleu:
            p.best_bleu = metrics["valid_bleu"]
            checkpoint.save_checkpoint(self.run_dir / "checkpoints" / checkpoint.BEST_DIR, self.model, self.tokenizer,
                                       extra_config={**self._extra_config(), "step": p.step, "valid_bleu": p.best_bleu})


def train(run_dir: str | Path, model_config: ModelConfig | None = None, config: TrainConfig | None = None,
          resume: bool = False, overwrite: bool = False) -> Trainer:
    """Start a run (model_config and config given) or continue one (resume=True); returns the Trainer.

    A new run goes into a new or empty folder, or replaces an earlier run there with `overwrite`."""
    run_dir = Path(run_dir)
    data = None
    if resume:
        tokenizer, model_config, stored = load_run(run_dir)
        if config is not None:  # only the stopping rules may change on resume
            stored = dataclasses.replace(stored, max_steps=config.max_steps, max_epochs=config.max_epochs,
                                         time_budget_s=config.time_budget_s)
        config = stored
    else:
        if model_config is None or config is None:
            raise ValueError("a new run needs a model config and a training config")
        tokenizer, model_config, data = prepare_run(run_dir, model_config, config, overwrite)
    torch.manual_seed(config.seed)
    trainer = Trainer(run_dir, Transformer(model_config), tokenizer, config, data)
    if resume:
        trainer.resume()
    trainer.run()
    return trainer
