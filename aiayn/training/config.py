"""Every training hyper-parameter (§5), and where a run stands."""
from __future__ import annotations

from dataclasses import dataclass

from aiayn.data.batching import DEFAULT_WIDTHS
from aiayn.data.bpe_dropout import check_options as check_bpe_dropout
from aiayn.data.moses import moses_languages
from aiayn.errors import InputError
from aiayn.training.schedule import DECAYS

MOST_RDROP = 100.0  # R-Drop's published weights are 0.3 to 5
MOST_AVERAGED = 100  # --average-last keeps a copy of the weights per averaged state


@dataclass
class TrainConfig:
    """Saved in RUN/config.json, so `--resume` needs only RUN.

    The data is a prepared DATA folder (`data`; aiayn.data.prepared): given as `--data`, or made
    from raw parallel files (`train_src`, `train_tgt`) into RUN/data when the run starts; a
    relative `data` is relative to the run directory.
    """

    data: str | None = None
    train_src: str = ""
    train_tgt: str = ""
    valid_src: str | None = None
    valid_tgt: str | None = None
    source_lang: str | None = None
    target_lang: str | None = None
    vocab_size: int = 8000  # shared BPE vocabulary learned on source + target training text
    max_length: int = 250  # subword tokens per side; longer pairs are skipped and counted
    sample_sentences: int = 1_000_000  # sentences SentencePiece learns the vocabulary from (a random sample)
    lowercase: bool = False  # the vocabulary case-folds all text (as the Multi30k papers' data)
    bpe_dropout: float = 0.0  # training pairs segmented with BPE-dropout (aiayn.data.bpe_dropout)
    segmentations: int = 1  # copies of the training pairs, each segmented anew
    moses_text: bool = False  # trained on Moses-tokenised lowercased text, made from the raw (aiayn.data.moses)
    batch_tokens: int = 8000  # source + target tokens per batch, padding included (§5.1), per process
    batch_widths: int = DEFAULT_WIDTHS  # (source, target) widths batches are padded to: at most twice as many shapes
    accumulate: int = 1  # batches per process per optimizer step (an effective batch larger than memory holds)
    label_smoothing: float = 0.1  # §5.4
    rdrop: float = 0.0  # R-Drop's weight on the KL of two dropout passes (aiayn.training.loss); 0: one pass
    warmup_steps: int | None = None  # §5.3's warm-up; None: fitted to the budget (aiayn.training.trainer)
    lr_scale: float = 1.0  # multiplies the §5.3 learning rate
    decay: str = "inverse-sqrt"  # §5.3's, or "linear": BERT's, to 0 at the end of the budget
    adam_beta1: float = 0.9  # §5.3
    adam_beta2: float = 0.98
    adam_eps: float = 1e-9
    clip_norm: float = 0.0  # 0: no gradient clipping (the paper has none)
    max_steps: int | None = None
    max_epochs: int | None = None
    time_budget_s: float | None = None  # seconds of training steps (validation not counted)
    eval_every: int = 500
    valid_share: float = 0.05  # a scheduled validation is skipped while validating has taken more of the time
    bleu_sentences: int | None = None  # validate BLEU on the first N validation sentences (None: all)
    average_last: int = 1  # validate the mean of the last N validated states (§6.1); the best is kept
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
        at_least_one = ("vocab_size", "max_length", "sample_sentences", "segmentations", "batch_tokens", "batch_widths",
                        "accumulate", "eval_every", "save_every", "keep_last", "log_every", "average_last")
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup_steps is not None and self.warmup_steps < 1:
            raise InputError(f"warmup_steps must be at least 1, got {self.warmup_steps}")
        for name in ("max_steps", "max_epochs", "time_budget_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InputError(f"{name} must not be negative, got {value}")
        if self.decay not in DECAYS:
            raise InputError(f"decay {self.decay!r}: one of {', '.join(DECAYS)}")
        if self.average_last > MOST_AVERAGED:
            raise InputError(f"average_last must be at most {MOST_AVERAGED}, got {self.average_last}")
        if not 0.0 < self.valid_share <= 1.0:
            raise InputError(f"valid_share must be in (0, 1], got {self.valid_share}")
        check_bpe_dropout(self.bpe_dropout, self.segmentations)
        if self.train_src:  # a raw corpus (prepared data names its own languages)
            moses_languages(self.moses_text, self.source_lang, self.target_lang)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise InputError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.rdrop <= MOST_RDROP:
            raise InputError(f"rdrop must be in [0, {MOST_RDROP}], got {self.rdrop}")
        if not (self.lr_scale > 0 and 0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1 and self.adam_eps > 0):
            raise InputError("lr_scale and adam_eps must be positive, adam betas in [0, 1)")
        if self.train_src:  # a translator's raw corpus (other kinds check their own rows)
            self.check_batch_fits(self.max_length)
        if (self.valid_src is None) != (self.valid_tgt is None):
            raise InputError("give both --valid-src and --valid-tgt, or neither")

    def check_batch_fits(self, max_length: int) -> None:
        """Every kept pair (up to max_length subwords a side, plus </s>) must fit in one batch."""
        if self.batch_tokens < 2 * (max_length + 1):
            raise InputError(f"batch_tokens {self.batch_tokens} is too small for max_length {max_length}: "
                             f"a pair can take 2 x ({max_length} + 1) = {2 * (max_length + 1)} tokens")


@dataclass
class Position:
    """Where training stands: resuming restores exactly this (plus weights, optimizer and RNG)."""

    step: int = 0  # optimizer updates done
    epoch: int = 0  # epoch of the next batch
    batch: int = 0  # index of the next batch within that epoch (batches of all processes counted)
    tokens: int = 0  # items trained on, all processes (a translator's: target tokens)
    train_seconds: float = 0.0  # time in training steps so far
    valid_seconds: float = 0.0  # time in validation so far (process 0's)
    best_score: float | None = None  # the best validation score so far (BLEU for a translator)
    warmup_steps: int = 0  # the warm-up fitted to the budget, once chosen (0: none yet, or --warmup given)
