"""§5's task: a translator trained by teacher forcing on prepared parallel data (aiayn.data.prepared),
validated by its loss and by the sacreBLEU of its greedy translations of the raw validation text."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from aiayn.kinds import TRANSLATOR
from aiayn.data.batching import MIN_ROWS, Batch, TokenBatches, collate
from aiayn.data.moses import MosesTextTokenizer
from aiayn.data.prepared import PreparedData
from aiayn.data.tokenizer import Tokenizer
from aiayn.decoding.translator import Translator
from aiayn.evaluation.bleu import bleu
from aiayn.model import Transformer
from aiayn.training.config import TrainConfig
from aiayn.training.loss import TeacherForcingLoss
from aiayn.training.task import Autocast, Task


class TranslationTask(Task):
    kind = TRANSLATOR

    def __init__(self, model: Transformer, tokenizer: Tokenizer, data: PreparedData, config: TrainConfig):
        super().__init__(model, tokenizer)
        self.data, self.config = data, config
        self.valid = data.valid_text()
        # The validation text is raw: a model of Moses text reads it through the Moses tokeniser.
        self.text = (MosesTextTokenizer(tokenizer, config.source_lang, config.target_lang) if config.moses_text
                     else tokenizer)

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        lengths = self.data.lengths()
        return lengths[:, 0] + 1, lengths[:, 1] + 1  # source + </s>, <s> + target

    def read(self, rows: np.ndarray, widths: tuple[int, int], where: tuple[int, int]) -> Batch:
        return collate(*self.data.read_pairs(rows.tolist()), widths, MIN_ROWS)

    def objective(self) -> TeacherForcingLoss:
        return TeacherForcingLoss(self.model, self.config.label_smoothing, self.config.rdrop)

    @property
    def validates(self) -> bool:
        return self.valid is not None

    @torch.no_grad()
    def validate(self, autocast: Autocast) -> tuple[dict[str, Any], float]:
        """The loss on the validation set, and greedy sacreBLEU on its first `bleu_sentences`."""
        src_text, tgt_text = self.valid
        smoothed, nll, tokens = self._validation_loss(src_text, tgt_text, autocast)
        n = self.config.bleu_sentences or len(src_text)
        with autocast():
            hypotheses = Translator(self.model, self.text).translate(src_text[:n], beam=1)
        score = bleu(hypotheses, tgt_text[:n], self.text.lowercases)
        metrics = {"valid_loss": smoothed / tokens, "valid_nll": nll / tokens, "valid_ppl": math.exp(nll / tokens),
                   "valid_bleu": score.score, "bleu_signature": score.signature}
        return metrics, score.score

    def _validation_loss(self, src_text: list[str], tgt_text: list[str], autocast: Autocast) -> tuple[float, ...]:
        """Summed smoothed loss and NLL of the validation pairs, in training's batches, and their tokens."""
        src_ids, tgt_ids = self.text.encode(src_text), self.text.encode_target(tgt_text)
        keep = np.array([i for i, (s, t) in enumerate(zip(src_ids, tgt_ids)) if s and t])
        src_len = np.array([len(src_ids[i]) + 1 for i in keep])
        tgt_len = np.array([len(tgt_ids[i]) + 1 for i in keep])
        budget = max(self.config.batch_tokens, int(src_len.max() + tgt_len.max()))
        plan = TokenBatches(src_len, tgt_len, budget, widths=self.config.batch_widths).epoch(0)
        device = next(self.model.parameters()).device
        objective = self.objective()
        sums, tokens = torch.zeros(2, dtype=torch.float64, device=device), 0  # the sums read once, at the end
        for k in range(len(plan)):
            rows = keep[plan[k]]
            batch = collate([src_ids[i] for i in rows], [tgt_ids[i] for i in rows], plan.width(k)).to(device)
            with autocast():
                sums += torch.stack(objective(*batch.tensors))
            tokens += batch.n_items
        smoothed, nll = sums.tolist()
        return smoothed, nll, tokens

    def checkpoint_config(self) -> dict[str, Any]:
        # Translators' checkpoints name no kind: those of every aiayn version load alike.
        return {"languages": {"source": self.config.source_lang, "target": self.config.target_lang}}

    def describe(self, metrics: dict[str, Any]) -> str:
        return (f"valid loss {metrics['valid_loss']:.3f}, ppl {metrics['valid_ppl']:.2f}, "
                f"BLEU {metrics['valid_bleu']:.2f} (greedy, sacreBLEU)")
