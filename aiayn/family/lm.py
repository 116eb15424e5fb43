"""A language model from the Transformer's decoder alone (GPT's recipe, Radford et al. 2018):
trained to predict each next subword of plain sentences, measured by perplexity, and sampled from
with the translator's cached decoding (temperature, top-k, top-p)."""
from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from aiayn.checkpoint import load_weights, open_checkpoint
from aiayn.data.batching import MIN_ROWS, pad
from aiayn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from aiayn.decoding.search import Sampling, greedy_steps, next_token_log_probs
from aiayn.errors import InputError
from aiayn.family.runs import FamilyRun, Rows, RowsTask, check_rows_fit, projected_nll, rows_of, train_family
from aiayn.family.store import config_field, device_of, learn_tokenizer, text_tokenizer
from aiayn.files import check_output_dir
from aiayn.kinds import LM
from aiayn.model import ModelConfig
from aiayn.model.family import LanguageModel
from aiayn.training.config import TrainConfig
from aiayn.training.run import is_run
from aiayn.training.task import Autocast, TensorBatch
from aiayn.training.trainer import Trainer



def _rows(tokenizer: Tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """<s> + subwords + </s>, the subwords cut to fit max_length."""
    return [[BOS_ID] + ids[: max_length - 2] + [EOS_ID] for ids in tokenizer.encode(texts)]


class NextTokenLoss(nn.Module):
    """The language model with its loss, as one module: the summed NLL of each next subword (twice:
    the loss, and the NLL logged). Only the positions whose next token is real are projected."""

    def __init__(self, model: LanguageModel):
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        target = tokens[:, 1:].flatten().index_select(0, positions)
        return projected_nll(self.model.hidden_states(tokens[:, :-1]), positions, self.model.output_projection, target)


class LanguageModelTask(RowsTask):
    """GPT's pre-training as a task of the training engine: rows <s> + subwords + </s>."""

    kind = LM

    def __init__(self, run: FamilyRun):
        super().__init__(LanguageModel(run.model_config), run.tokenizer)
        self.rows, self.valid = rows_of(run.arrays, "train"), rows_of(run.arrays, "valid")
        self.max_length = run.options["max_length"]

    def read(self, rows: np.ndarray, widths: tuple[int, int], where: tuple[int, int]) -> TensorBatch:
        return next_token_batch([self.rows[i] for i in rows], widths[0])

    def objective(self) -> NextTokenLoss:
        return NextTokenLoss(self.model)

    def validate(self, autocast: Autocast) -> tuple[dict[str, Any], float]:
        ppl = rows_perplexity(self.model, [self.valid[i] for i in range(len(self.valid))], autocast)
        return {"valid_ppl": ppl}, -ppl  # the lowest perplexity is the best

    def checkpoint_config(self) -> dict[str, Any]:
        return {"kind": LM, "max_length": self.max_length}

    def describe(self, metrics: dict[str, Any]) -> str:
        return f"valid perplexity {metrics['valid_ppl']:.2f}"


def next_token_batch(rows: list[list[int]], width: int | None = None) -> TensorBatch:
    """Rows padded to `width` (at least MIN_ROWS of them), and the flat positions (into the
    [B, width - 1] predictions) whose next token is real."""
    tokens = pad(rows + [[]] * (MIN_ROWS - len(rows)), width=width)
    positions = (tokens[:, 1:] != PAD_ID).flatten().nonzero().squeeze(1)
    return TensorBatch((tokens, positions), positions.numel())


def perplexity(model: LanguageModel, tokenizer: Tokenizer, texts: list[str], max_length: int) -> float:
    """exp(mean NLL per predicted subword, </s> included) over the texts."""
    return rows_perplexity(model, _rows(tokenizer, texts, max_length))


def rows_perplexity(model: LanguageModel, rows: list[list[int]], autocast: Autocast = contextlib.nullcontext,
                    batch_size: int = 64) -> float:
    """exp(mean NLL per predicted subword, </s> included) over the rows."""
    rows = sorted(rows, key=len)
    objective, device = NextTokenLoss(model), device_of(model)
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = next_token_batch(rows[start:start + batch_size]).to(device)
            with autocast():
                total += objective(*batch.tensors)[0]
            count += batch.n_items
    return math.exp(total.item() / count)


def train_lm(texts: list[str], valid: list[str] | None, out: Path, model_config: ModelConfig, config: TrainConfig,
             vocab_size: int = 8000, max_length: int = 128, overwrite: bool = False) -> tuple[Trainer, float | None]:
    """Train on plain sentences; the run at `out` keeps the state of the lowest validation
    perplexity as checkpoints/best. Returns the trainer and that perplexity."""
    def build() -> FamilyRun:
        check_output_dir(out, "run", is_run, overwrite)
        tokenizer = learn_tokenizer(texts, vocab_size, config.seed)
        rows = Rows.of(_rows(tokenizer, texts, max_length))
        check_rows_fit(rows, config.batch_tokens)
        arrays = rows.arrays("train") | (Rows.of(_rows(tokenizer, valid, max_length)).arrays("valid") if valid else {})
        language_model = dataclasses.replace(model_config, vocab_size=tokenizer.vocab_size, n_encoder_layers=0)
        return FamilyRun(out, language_model, config, {"kind": LM, "max_length": max_length}, tokenizer, arrays)

    trainer = train_family(out, config, LanguageModelTask, build, overwrite)
    best = trainer.position.best_score
    return trainer, -best if best is not None else None


class PromptDecoder:
    """A language model's next-token log-probabilities, one step at a time (the decoder interface of
    aiayn.decoding.search): the first step reads the whole prompt, each later one the new token
    (with the cache), or the whole text so far (without). The prompts of a batch are rows of one
    length: there is no padding mask, so a padded row would attend to its padding."""

    def __init__(self, model: LanguageModel, prompt: Tensor, use_cache: bool) -> None:
        if (prompt == model.config.pad_id).any():
            raise ValueError("PromptDecoder takes prompts of one length, without padding")
        self.model, self.text = model, prompt
        self.cache = model.new_cache() if use_cache else None
        self.first = True

    def step(self, new_tokens: Tensor) -> Tensor:
        if self.first:
            feed = self.text
        elif self.cache is not None:
            feed = new_tokens[:, None]  # the cache holds the text so far
        else:
            feed = self.text = torch.cat([self.text, new_tokens[:, None]], dim=1)
        self.first = False
        return next_token_log_probs(self.model(feed, self.cache)[:, -1], self.model.config)

    def select(self, rows: Tensor, sentences: Tensor | None = None) -> None:
        self.text = self.text.index_select(0, rows)
        if self.cache is not None:
            self.cache.select(rows, sentences)


@dataclasses.dataclass
class TextGenerator:
    model: LanguageModel
    tokenizer: Tokenizer
    max_length: int

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", announce: bool = False) -> "TextGenerator":
        directory, config, model_config = open_checkpoint(path, LM, announce)
        tokenizer = text_tokenizer(directory, model_config)
        max_length = config_field(config, "max_length", int, directory, minimum=3)
        return cls(load_weights(LanguageModel(model_config), directory).to(device), tokenizer, max_length)

    @torch.inference_mode()
    def generate_ids(self, prompt: list[int], max_new_tokens: int = 50, sampling: Sampling | None = None,
                     use_cache: bool = True) -> list[int]:
        """Continue <s> + prompt until </s> or max_new_tokens: the most probable token each step,
        or a sampled one, by the translator's decoding loop (aiayn.decoding.search.greedy_steps).
        With the cache, each new token costs one step of the decoder."""
        limit = self.model.position_limit
        if limit is not None:
            max_new_tokens = min(max_new_tokens, limit - 1 - len(prompt))
        if max_new_tokens < 1:
            return []
        device = device_of(self.model)
        decoder = PromptDecoder(self.model, torch.tensor([[BOS_ID] + prompt], device=device), use_cache)
        return greedy_steps(decoder, self.model.config, torch.tensor([max_new_tokens], device=device),
                            sampling=sampling)[0]

    def generate(self, prompt: str, max_new_tokens: int = 50, sampling: Sampling | None = None) -> str:
        """The prompt and its continuation, as raw text."""
        ids = self.tokenizer.encode([prompt])[0] if prompt else []
        if len(ids) > self.max_length - 2:
            raise InputError(f"--prompt: {len(ids)} subwords; this model was trained on at most "
                             f"{self.max_length - 2} a sentence")
        return self.tokenizer.decode([ids + self.generate_ids(ids, max_new_tokens, sampling)])[0]
