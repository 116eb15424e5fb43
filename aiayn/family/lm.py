"""A language model from the Transformer's decoder alone (GPT's recipe, Radford et al. 2018):
trained to predict each next subword of plain sentences, measured by perplexity, and sampled from
with the translator's cached decoding (temperature, top-k, top-p)."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from aiayn import checkpoint
from aiayn.data.batching import pad
from aiayn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from aiayn.decoding.search import Sampling
from aiayn.errors import InputError
from aiayn.family.loop import Outcome, Schedule, fit, length_batches
from aiayn.family.store import config_field, device_of, learn_tokenizer, load_weights, open_checkpoint, text_tokenizer
from aiayn.files import check_output_dir
from aiayn.model import ModelConfig
from aiayn.model.family import LanguageModel

LM = "language-model"


def _rows(tokenizer: Tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """<s> + subwords + </s>, the subwords cut to fit max_length."""
    return [[BOS_ID] + ids[: max_length - 2] + [EOS_ID] for ids in tokenizer.encode(texts)]


def _nll(model: LanguageModel, rows: list[list[int]]) -> tuple[Tensor, int]:
    """Summed next-token negative log-likelihood of a batch of rows, and the tokens predicted."""
    tokens = pad(rows).to(device_of(model))
    logits = model(tokens[:, :-1]).float()
    targets = tokens[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=PAD_ID,
                           reduction="sum"), int((targets != PAD_ID).sum())


@torch.no_grad()
def perplexity(model: LanguageModel, tokenizer: Tokenizer, texts: list[str], max_length: int,
               batch_size: int = 64) -> float:
    """exp(mean NLL per predicted subword, </s> included) over the texts."""
    rows = sorted(_rows(tokenizer, texts, max_length), key=len)
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        nll, n = _nll(model, rows[start:start + batch_size])
        total, count = total + nll.item(), count + n
    return math.exp(total / count)


def train_lm(texts: list[str], valid: list[str] | None, out: Path, model_config: ModelConfig, schedule: Schedule,
             vocab_size: int = 8000, max_length: int = 128, batch_tokens: int = 6000,
             overwrite: bool = False) -> tuple[Outcome, float | None]:
    """Train on plain sentences; keep the state with the lowest validation perplexity at `out`."""
    check_output_dir(out, "checkpoint", checkpoint.is_checkpoint, overwrite)
    tokenizer = learn_tokenizer(texts, vocab_size, schedule.seed)
    config = dataclasses.replace(model_config, vocab_size=tokenizer.vocab_size, n_encoder_layers=0)
    torch.manual_seed(schedule.seed)
    model = LanguageModel(config)
    rows = _rows(tokenizer, texts, max_length)

    def loss_of(net: LanguageModel, ids: np.ndarray) -> tuple[Tensor, int]:
        return _nll(net, [rows[i] for i in ids])

    def negative_perplexity(net: LanguageModel) -> float:  # fit keeps the highest score
        return -perplexity(net, tokenizer, valid, max_length)

    outcome = fit(model, length_batches(rows, batch_tokens, schedule.seed), loss_of, schedule,
                  negative_perplexity if valid else None, unit="tokens")
    model.load_state_dict(outcome.best_state)
    best = -outcome.best_score if outcome.best_score is not None else None
    checkpoint.save_checkpoint(out, model, tokenizer, {"kind": LM, "max_length": max_length,
                                                       "valid_perplexity": best, "history": outcome.history})
    return outcome, best


@dataclasses.dataclass
class TextGenerator:
    model: LanguageModel
    tokenizer: Tokenizer
    max_length: int

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", announce: bool = False) -> "TextGenerator":
        directory, config, model_config = open_checkpoint(path, LM, announce)
        tokenizer = text_tokenizer(directory, model_config.vocab_size)
        max_length = config_field(config, "max_length", int, directory, minimum=3)
        return cls(load_weights(LanguageModel(model_config), directory).to(device), tokenizer, max_length)

    @torch.inference_mode()
    def generate_ids(self, prompt: list[int], max_new_tokens: int = 50, sampling: Sampling | None = None,
                     use_cache: bool = True) -> list[int]:
        """Continue <s> + prompt until </s> or max_new_tokens: the most probable token each step,
        or a sampled one. With the cache, each new token costs one step of the decoder."""
        limit = self.model.position_limit
        if limit is not None:
            max_new_tokens = min(max_new_tokens, limit - 1 - len(prompt))
        context = torch.tensor([[BOS_ID] + prompt], device=device_of(self.model))
        cache = self.model.new_cache() if use_cache else None
        new: list[int] = []
        feed = context
        for _ in range(max(max_new_tokens, 0)):
            logits = self.model(feed, cache)[:, -1].float()
            log_probs = logits.log_softmax(dim=-1)
            log_probs[:, [PAD_ID, BOS_ID]] = float("-inf")
            token = int(sampling.pick(log_probs)[0] if sampling else log_probs.argmax(dim=-1)[0])
            if token == EOS_ID:
                break
            new.append(token)
            step = torch.tensor([[token]], device=context.device)
            feed = step if use_cache else torch.cat([feed, step], dim=1)
        return new

    def generate(self, prompt: str, max_new_tokens: int = 50, sampling: Sampling | None = None) -> str:
        """The prompt and its continuation, as raw text."""
        ids = self.tokenizer.encode([prompt])[0] if prompt else []
        if len(ids) > self.max_length - 2:
            raise InputError(f"--prompt: {len(ids)} subwords; this model was trained on at most "
                             f"{self.max_length - 2} a sentence")
        return self.tokenizer.decode([ids + self.generate_ids(ids, max_new_tokens, sampling)])[0]
