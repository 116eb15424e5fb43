"""Sentence classification with the Transformer's encoder alone, BERT's recipe (Devlin et al. 2019):
optional masked-language-model pre-training on unlabelled text, then fine-tuning on labelled
sentences, and `pipeline("sentiment-analysis", model=RUN)` shaped like Hugging Face's.

Labelled data is TSV with a header, `sentence<TAB>label` (GLUE's SST-2 as it ships); the labels'
names are kept in the checkpoint (`--label-names` renames them, in sorted order).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from aiayn import checkpoint
from aiayn.data.batching import TokenBatches, pad
from aiayn.data.corpus import CorpusError, read_lines
from aiayn.data.tokenizer import BOS_ID, PAD_ID, Tokenizer
from aiayn.errors import InputError
from aiayn.family.loop import Outcome, Schedule, fit, forever
from aiayn.family.store import device_of, load_weights, open_checkpoint, text_tokenizer
from aiayn.files import check_output_dir
from aiayn.model import ModelConfig
from aiayn.model.family import EncoderClassifier, MaskedLanguageModel, mask_tokens

CLASSIFIER, MASKED_LM = "classifier", "masked-lm"
MASK = "<mask>"  # BERT's [MASK]; [CLS] is <s> (bos), padding is <pad>


def read_labelled(path: str | Path) -> tuple[list[str], list[str]]:
    """Sentences and labels of a TSV file whose first line is a header."""
    lines = read_lines(path)
    sentences, labels = [], []
    for number, line in enumerate(lines[1:], start=2):
        text, tab, label = line.rpartition("\t")
        if not tab or not label.strip():
            raise CorpusError(f"{path}, line {number}: not 'sentence<TAB>label'")
        sentences.append(text)
        labels.append(label.strip())
    if not sentences:
        raise CorpusError(f"{path}: no labelled sentence after the header")
    return sentences, labels


def read_text(paths: Sequence[str | Path]) -> list[str]:
    """Unlabelled sentences: every line of plain or .gz files; of a .tsv (or .tsv.gz), the first
    column after the header."""
    sentences = []
    for path in paths:
        lines = read_lines(path)
        if ".tsv" in Path(path).suffixes:
            lines = [line.split("\t", 1)[0] for line in lines[1:]]
        sentences += [line for line in lines if line.strip()]
    if not sentences:
        raise CorpusError(f"{', '.join(map(str, paths))}: no text")
    return sentences


@dataclasses.dataclass(frozen=True)
class TextForm:
    """How a sentence becomes the encoder's input: [CLS] + subwords, cut to max_length in all;
    lowercased first when the training text was (GLUE's SST-2 is)."""

    max_length: int = 128
    lowercase: bool = False

    def rows(self, tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
        texts = [t.lower() for t in texts] if self.lowercase else texts
        return [[BOS_ID] + ids[: self.max_length - 1] for ids in tokenizer.encode(texts)]


def _epochs(rows: list[list[int]], batch_tokens: int, seed: int):
    lengths = np.array([len(r) for r in rows])
    batches = TokenBatches(lengths, np.zeros_like(lengths), batch_tokens, seed)

    def epoch(e: int) -> list[np.ndarray]:
        plan = batches.epoch(e)
        return [plan[k] for k in range(len(plan))]
    return epoch


@dataclasses.dataclass
class TextClassifier:
    """A trained classifier with its tokenizer and label names."""

    model: EncoderClassifier
    tokenizer: Tokenizer
    labels: list[str]
    form: TextForm

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", announce: bool = False) -> "TextClassifier":
        directory, config, model_config = open_checkpoint(path, CLASSIFIER, announce)
        tokenizer = text_tokenizer(directory, model_config.vocab_size)
        model = load_weights(EncoderClassifier(model_config, len(config["labels"])), directory)
        return cls(model.to(device), tokenizer, config["labels"], TextForm(**config["text_form"]))

    @torch.inference_mode()
    def probabilities(self, texts: list[str], batch_size: int = 64) -> Tensor:
        """[texts, labels] softmax probabilities (an empty text is classified from [CLS] alone)."""
        rows = self.form.rows(self.tokenizer, texts)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        out = torch.empty(len(rows), len(self.labels))
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            tokens = pad([rows[i] for i in chunk]).to(device_of(self.model))
            out[chunk] = self.model(tokens).float().softmax(dim=-1).cpu()
        return out

    def classify(self, texts: list[str]) -> list[tuple[str, float]]:
        scores, best = self.probabilities(texts).max(dim=-1)
        return [(self.labels[i], s) for i, s in zip(best.tolist(), scores.tolist())]

    def accuracy(self, texts: list[str], labels: list[str]) -> float:
        return sum(p == g for (p, _), g in zip(self.classify(texts), labels)) / len(labels)


def pretrain_mlm(texts: list[str], out: Path, model_config: ModelConfig, schedule: Schedule, vocab_size: int = 8000,
                 form: TextForm = TextForm(), batch_tokens: int = 4000, overwrite: bool = False) -> Outcome:
    """BERT's pre-training on unlabelled sentences; writes a `masked-lm` checkpoint at `out`."""
    check_output_dir(out, "checkpoint", checkpoint.is_checkpoint, overwrite)
    if form.lowercase:
        texts = [t.lower() for t in texts]
    tokenizer = Tokenizer.train(texts, vocab_size, seed=schedule.seed, symbols=(MASK,))
    mask_id = tokenizer.processor.piece_to_id(MASK)
    config = dataclasses.replace(model_config, vocab_size=tokenizer.vocab_size, n_decoder_layers=0)
    torch.manual_seed(schedule.seed)
    model = MaskedLanguageModel(config)
    rows = form.rows(tokenizer, texts)
    special = torch.tensor([PAD_ID, BOS_ID, 2, 3, mask_id])
    generator = torch.Generator().manual_seed(schedule.seed)

    def loss_of(net: MaskedLanguageModel, ids: np.ndarray) -> tuple[Tensor, int]:
        inputs, labels = mask_tokens(pad([rows[i] for i in ids]), mask_id, config.vocab_size, special, generator)
        predicted = labels != -100
        logits = net(inputs, where=predicted).float()
        return F.cross_entropy(logits, labels[predicted], reduction="sum"), int(predicted.sum())

    outcome = fit(model, forever(_epochs(rows, batch_tokens, schedule.seed)), loss_of, schedule, unit="tokens")
    model.load_state_dict(outcome.best_state)
    checkpoint.save_checkpoint(out, model, tokenizer, {"kind": MASKED_LM, "text_form": dataclasses.asdict(form),
                                                       "history": outcome.history})
    return outcome


def train_classifier(train: tuple[list[str], list[str]], valid: tuple[list[str], list[str]] | None, out: Path,
                     model_config: ModelConfig, schedule: Schedule, init: str | Path | None = None,
                     label_names: list[str] | None = None, vocab_size: int = 8000, form: TextForm = TextForm(),
                     batch_tokens: int = 4000, overwrite: bool = False) -> tuple[Outcome, float | None]:
    """Fine-tune (from a `masked-lm` checkpoint `init`, whose vocabulary and text form it keeps)
    or train from scratch on labelled sentences; the state with the best validation accuracy is
    written at `out`."""
    check_output_dir(out, "checkpoint", checkpoint.is_checkpoint, overwrite)
    texts, labels = train
    names = sorted(set(labels))
    if label_names is not None and len(label_names) != len(names):
        raise InputError(f"--label-names gives {len(label_names)} names for the {len(names)} labels "
                         f"{', '.join(names)} (in this order)")
    if valid is not None and set(valid[1]) - set(names):
        raise InputError(f"validation labels {sorted(set(valid[1]) - set(names))} are not among the training labels")
    if init is not None:
        directory, init_config, config = open_checkpoint(init, MASKED_LM)
        tokenizer = text_tokenizer(directory, config.vocab_size)
        form = TextForm(**init_config["text_form"])
        config = dataclasses.replace(config, dropout=model_config.dropout)
    else:
        tokenizer = Tokenizer.train([t.lower() for t in texts] if form.lowercase else texts, vocab_size,
                                    seed=schedule.seed, symbols=(MASK,))
        config = dataclasses.replace(model_config, vocab_size=tokenizer.vocab_size, n_decoder_layers=0)
    torch.manual_seed(schedule.seed)
    model = EncoderClassifier(config, len(names))
    if init is not None:
        pretrained = load_weights(MaskedLanguageModel(config), directory)
        model.body.load_state_dict(pretrained.body.state_dict())
    rows = form.rows(tokenizer, texts)
    targets = torch.tensor([names.index(label) for label in labels])
    shown = label_names or names

    def loss_of(net: EncoderClassifier, ids: np.ndarray) -> tuple[Tensor, int]:
        logits = net(pad([rows[i] for i in ids])).float()
        return F.cross_entropy(logits, targets[torch.from_numpy(ids).long()], reduction="sum"), len(ids)

    def accuracy(net: EncoderClassifier) -> float:
        gold = [shown[names.index(label)] for label in valid[1]]
        return TextClassifier(net, tokenizer, shown, form).accuracy(valid[0], gold)

    outcome = fit(model, forever(_epochs(rows, batch_tokens, schedule.seed)), loss_of, schedule,
                  accuracy if valid is not None else None)
    model.load_state_dict(outcome.best_state)
    checkpoint.save_checkpoint(out, model, tokenizer, {"kind": CLASSIFIER, "labels": shown,
                                                       "text_form": dataclasses.asdict(form),
                                                       "valid_accuracy": outcome.best_score, "history": outcome.history,
                                                       "pretrained": str(init) if init else None})
    return outcome, outcome.best_score


class Pipeline:
    """`classifier(texts)` -> [{'label': ..., 'score': ...}, ...], one per text, as Hugging Face's."""

    def __init__(self, classifier: TextClassifier):
        self.classifier = classifier

    def __call__(self, texts: str | list[str]) -> list[dict[str, float | str]]:
        batch = [texts] if isinstance(texts, str) else list(texts)
        return [{"label": label, "score": score} for label, score in self.classifier.classify(batch)]


TASKS = ("sentiment-analysis", "text-classification")


def pipeline(task: str, model: str | Path | None = None, device: str = "cpu") -> Pipeline:
    """Hugging Face's entry point, on a classifier trained with aiayn (nothing is downloaded)."""
    if task not in TASKS:
        raise InputError(f"task {task!r}: aiayn's pipeline does {', '.join(TASKS)}")
    if model is None:
        raise InputError("give model=RUN, a classifier trained with aiayn (nothing is downloaded): e.g. "
                         "aiayn train-classifier --train sst2/train.tsv.gz --valid sst2/dev.tsv.gz "
                         "--label-names NEGATIVE,POSITIVE --out RUN")
    return Pipeline(TextClassifier.from_checkpoint(model, device))
