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
from aiayn.data.corpus import filter_pairs, read_parallel
from aiayn.data.tokenizer import Tokenizer
from aiayn.decoding.translator import Translator
from aiayn.evaluation.bleu import bleu
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
            raise ValueError("set at least one of max_steps, max_epochs, time_budget_s")
        if self.accumulate < 1:
            raise ValueError("accumulate must be at least 1")


@dataclass
class Position:
    """Where training stands: resuming restores exactly this (plus weights, optimizer and RNG)."""

    step: int = 0  # optimizer updates done
    epoch: int = 0  # epoch of the next batch
    batch: int = 0  # index of the next batch within that epoch
    tokens: int = 0  # target tokens trained on
    train_seconds: float = 0.0  # time in training steps so far
    best_bleu: float = -1.0


class Logger:
    """Metrics to RUN/metrics.jsonl (appended) and short lines to stderr."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "metrics.jsonl"

    def record(self, **values: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(values) + "\n")

    @staticmethod
    def say(message: str) -> None:
        tqdm.write(message, file=sys.stderr)


def prepare_run(run_dir: Path, model_config: ModelConfig, config: TrainConfig) -> tuple[Tokenizer, ModelConfig]:
    """A new run: learn the shared vocabulary and write RUN/config.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "config.json").exists():
        raise FileExistsError(f"{run_dir} already holds a run; use --resume to continue it or choose another --out")
    src, tgt = read_parallel(config.train_src, config.train_tgt)
    Logger.say(f"learning a shared BPE vocabulary of {config.vocab_size} pieces on {len(src)} + {len(tgt)} sentences")
    tokenizer = Tokenizer.train(src + tgt, config.vocab_size)
    model_config = dataclasses.replace(model_config, vocab_size=tokenizer.vocab_size)
    tokenizer.save(run_dir / "tokenizer.model")
    with open(run_dir / "config.json", "w", encoding="utf-8") as f:
        json.dump({"model": model_config.to_dict(), "training": dataclasses.asdict(config)}, f, indent=1)
    return tokenizer, model_config


def load_run(run_dir: Path) -> tuple[Tokenizer, ModelConfig, TrainConfig]:
    stored = checkpoint.read_config(run_dir)
    return (Tokenizer.load(run_dir / "tokenizer.model"), ModelConfig.from_dict(stored["model"]),
            TrainConfig(**stored["training"]))


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
    def __init__(self, run_dir: Path, model: Transformer, tokenizer: Tokenizer, config: TrainConfig):
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
        self._load_data()

    # ------------------------------------------------------------------ data
    def _load_data(self) -> None:
        c = self.config
        src, tgt = read_parallel(c.train_src, c.train_tgt)
        src_ids, tgt_ids = self.tokenizer.encode(src), self.tokenizer.encode(tgt)
        keep, report = filter_pairs(src_ids, tgt_ids, c.max_length, source_name=c.train_src)
        self.log.say(f"training data: {report}" + (f" (e.g. {'; '.join(report.examples)})" if report.examples else ""))
        self.log.record(event="data", kept=report.kept, skipped_empty=report.empty, skipped_too_long=report.too_long)
        self.src_ids = [src_ids[i] for i in keep]
        self.tgt_ids = [tgt_ids[i] for i in keep]
        self.batches = TokenBatches([(len(s) + 1, len(t) + 1) for s, t in zip(self.src_ids, self.tgt_ids)],
                                    c.batch_tokens, seed=c.seed)
        self.batches_per_epoch = len(self.batches.epoch(0))
        self.valid: tuple[list[str], list[str]] | None = None
        if c.valid_src and c.valid_tgt:
            self.valid = read_parallel(c.valid_src, c.valid_tgt)

    def _batch_stream(self) -> Iterator[tuple[int, int, list[int]]]:
        """(epoch, index, pair indices) from the saved position on, epoch after epoch."""
        epoch, index = self.position.epoch, self.position.batch
        while True:
            order = self.batches.epoch(epoch)
            for i in range(index, len(order)):
                yield epoch, i, order[i]
            epoch, index = epoch + 1, 0

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
        checkpoint.remove_partial_checkpoints(self.run_dir)
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
                     (p.epoch + p.batch / self.batches_per_epoch) / c.max_epochs if c.max_epochs else 0.0,
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
            following = (last_epoch, last_index + 1) if last_index + 1 < self.batches_per_epoch else (last_epoch + 1, 0)
            p.step, p.tokens, p.train_seconds = p.step + 1, p.tokens + tokens, p.train_seconds + seconds
            p.epoch, p.batch = following
            window_tokens, window_seconds = window_tokens + tokens, window_seconds + seconds
            window_loss, window_nll, window_steps = window_loss + loss, window_nll + nll, window_steps + 1
            bar.update(int(1000 * self._fraction_done()) - bar.n)
            if p.step % c.log_every == 0 or self._done():
                record = dict(step=p.step, epoch=round(p.epoch + p.batch / self.batches_per_epoch, 3),
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
          resume: bool = False) -> Trainer:
    """Start a run (model_config and config given) or continue one (resume=True); returns the Trainer."""
    run_dir = Path(run_dir)
    if resume:
        tokenizer, model_config, stored = load_run(run_dir)
        if config is not None:  # only the stopping rules may change on resume
            stored = dataclasses.replace(stored, max_steps=config.max_steps, max_epochs=config.max_epochs,
                                         time_budget_s=config.time_budget_s)
        config = stored
    else:
        if model_config is None or config is None:
            raise ValueError("a new run needs a model config and a training config")
        tokenizer, model_config = prepare_run(run_dir, model_config, config)
    torch.manual_seed(config.seed)
    trainer = Trainer(run_dir, Transformer(model_config), tokenizer, config)
    if resume:
        trainer.resume()
    trainer.run()
    return trainer
