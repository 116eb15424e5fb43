"""Raw text in, raw text out: tokenise, batch by length, decode, detokenise, restore the order."""
from __future__ import annotations

from pathlib import Path

import torch

from aiayn.data.batching import pad
from aiayn.data.tokenizer import EOS_ID, Tokenizer
from aiayn.decoding.search import EXTRA_OUTPUT_LENGTH, greedy_search
from aiayn.model import Transformer


def length_sorted_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped into batches of similar length whose padded size (rows x (longest source +
    the output allowance of §6.1)) stays within max_tokens; every sentence gets a batch."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, current, longest = [], [], 0
    for index in order:
        grown = max(longest, lengths[index] + EXTRA_OUTPUT_LENGTH)
        if current and (len(current) + 1) * grown > max_tokens:
            batches.append(current)
            current, grown = [], lengths[index] + EXTRA_OUTPUT_LENGTH
        current.append(index)
        longest = grown
    if current:
        batches.append(current)
    return batches


class Translator:
    """A model with its tokenizer, translating lists of raw sentences."""

    def __init__(self, model: Transformer, tokenizer: Tokenizer, config: dict | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config or {"model": model.config.to_dict()}

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> "Translator":
        from aiayn.checkpoint import load_checkpoint

        model, tokenizer, config = load_checkpoint(path, device)
        return cls(model, tokenizer, config)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def translate_ids(self, sources: list[list[int]], batch_tokens: int = 6000) -> list[list[int]]:
        """Subword ids (without <eos>) to output ids, in input order; empty input gives empty output."""
        results: list[list[int]] = [[] for _ in sources]
        todo = [i for i, s in enumerate(sources) if s]
        for batch in length_sorted_batches([len(sources[i]) + 1 for i in todo], batch_tokens):
            rows = [todo[k] for k in batch]
            src = pad([sources[i] + [EOS_ID] for i in rows]).to(self.device)
            for row, output in zip(rows, greedy_search(self.model, src)):
                results[row] = output
        return results

    def translate(self, texts: list[str], batch_tokens: int = 6000) -> list[str]:
        outputs = self.translate_ids(self.tokenizer.encode(texts), batch_tokens)
        return self.tokenizer.decode(outputs)
