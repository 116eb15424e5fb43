"""Sentence classification with the Transformer's encoder alone, BERT's recipe (Devlin et al. 2019):
optional masked-language-model pre-training on unlabelled text, then fine-tuning on labelled
sentences, and `pipeline("sentiment-analysis", model=RUN)` shaped like Hugging Face's.

Labelled data is TSV whose header names a `sentence` and a `label` column (GLUE's SST-2 as it
ships); the labels' names are kept in the checkpoint (`--label-names` renames them, in sorted order).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from aiayn import checkpoint
from aiayn.checkpoint import load_weights, open_checkpoint
from aiayn.data.batching import MIN_ROWS, pad
from aiayn.data.corpus import CorpusError, read_lines
from aiayn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer
from aiayn.errors import InputError
from aiayn.family.runs import (
    IGNORED,
    ClassificationLoss,
    FamilyRun,
    Rows,
    RowsTask,
    accuracy_of,
    batch_seed,
    check_rows_fit,
    projected_nll,
    rows_of,
    train_family,
)
from aiayn.family.store import config_field, device_of, learn_tokenizer, text_tokenizer
from aiayn.files import check_output_dir
from aiayn.kinds import CLASSIFIER, MASKED_LM
from aiayn.training.config import TrainConfig
from aiayn.training.run import is_run
from aiayn.training.task import Autocast, TensorBatch
from aiayn.training.trainer import Trainer
from aiayn.model import ModelConfig
from aiayn.model.config import BERT_MASKED, MOST_MASKED, POOLINGS, Pooling
from aiayn.model.family import EncoderClassifier, MaskedLanguageModel, mask_tokens
from aiayn.model.transformer import position_limit

MASK = "<mask>"  # BERT's [MASK]; [CLS] is <s> (bos), padding is <pad>


def _header(path: str | Path, lines: list[str], needed: tuple[str, ...]) -> list[str]:
    """The TSV header's column names (trimmed, lowercased, without a byte-order mark); CorpusError
    naming the file unless it has the `needed` ones."""
    header = [name.strip().lower() for name in lines[0].lstrip("\ufeff").split("\t")] if lines else []
    if not all(name in header for name in needed):
        raise CorpusError(f"{path}, line 1: the header names no {' and '.join(map(repr, needed))} column "
                          f"(found {header[:4]}); TSV files need a header, e.g. sentence<TAB>label")
    return header


def _fields(line: str, header: list[str], text_column: int) -> list[str]:
    """A TSV line cut into the header's columns; the sentence column keeps any tab inside it."""
    after = len(header) - 1 - text_column
    left = line.split("\t", text_column)
    right = left.pop().rsplit("\t", after) if len(left) > text_column else []
    return left + right


def read_labelled(path: str | Path) -> tuple[list[str], list[str]]:
    """Sentences and labels of a TSV file whose header names a `sentence` and a `label` column
    (GLUE's layout; other columns are ignored)."""
    lines = read_lines(path)
    header = _header(path, lines, ("sentence", "label"))
    text_column, label_column = header.index("sentence"), header.index("label")
    sentences, labels = [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = _fields(line, header, text_column)
        if len(fields) != len(header):
            raise CorpusError(f"{path}, line {number}: {len(fields)} columns where the header has {len(header)}")
        if not fields[label_column].strip():
            raise CorpusError(f"{path}, line {number}: no label")
        sentences.append(fields[text_column])
        labels.append(fields[label_column].strip())
    if not sentences:
        raise CorpusError(f"{path}: no labelled sentence after the header")
    return sentences, labels


def read_text(paths: Sequence[str | Path]) -> list[str]:
    """Unlabelled sentences: every line of plain or .gz files; of a .tsv (or .tsv.gz), the
    `sentence` column its header names."""
    sentences = []
    for path in paths:
        lines = read_lines(path)
        if ".tsv" in Path(path).suffixes:
            header = _header(path, lines, ("sentence",))
            column = header.index("sentence")
            rows = [_fields(line, header, column) for line in lines[1:]]
            for number, fields in enumerate(rows, start=2):
                if len(fields) != len(header):
                    raise CorpusError(f"{path}, line {number}: {len(fields)} columns where the header has "
                                      f"{len(header)}")
            lines = [fields[column] for fields in rows]
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

    @classmethod
    def of(cls, config: dict, directory: Path) -> "TextForm":
        """The text form a checkpoint's config.json records."""
        fields = config_field(config, "text_form", dict, directory)
        max_length, lowercase = fields.get("max_length"), fields.get("lowercase")
        if set(fields) != {"max_length", "lowercase"} or not isinstance(lowercase, bool) \
                or not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 3:
            raise checkpoint.CheckpointError(f"{directory / 'config.json'}: field 'text_form' is not "
                                             "{max_length: an integer >= 3, lowercase: true or false}")
        return cls(max_length, lowercase)

    def rows(self, tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
        texts = [t.lower() for t in texts] if self.lowercase else texts
        return [[BOS_ID] + ids[: self.max_length - 1] for ids in tokenizer.encode(texts)]


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
        tokenizer = text_tokenizer(directory, model_config)
        labels = config_field(config, "labels", list, directory)
        if len(labels) < 2:
            raise checkpoint.CheckpointError(f"{directory / 'config.json'}: field 'labels' names fewer than 2 labels")
        pooling = config.get("pooling", "cls")  # checkpoints from before the choice used [CLS]
        if pooling not in POOLINGS:
            raise checkpoint.CheckpointError(f"{directory / 'config.json'}: field 'pooling' is not one of "
                                             f"{', '.join(POOLINGS)}")
        model = load_weights(EncoderClassifier(model_config, len(labels), pooling), directory)
        return cls(model.to(device), tokenizer, [str(label) for label in labels], TextForm.of(config, directory))

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


def pack_sentences(rows: list[list[int]], limit: int, seed: int) -> list[list[int]]:
    """Sentences ([CLS] + subwords each) several to a row, [CLS] s1 </s> s2 </s> ..., at most `limit`
    tokens, in an order shuffled with `seed` (RoBERTa's full-sentence packing; BERT packs runs of
    contiguous text); a sentence longer than a row is cut to fit one. One short sentence a row
    (Tatoeba's average is 9 subwords) leaves the farther positions, and attention across them, untrained,
    which longer sentences at fine-tuning use (SST-2 dev's average is 25)."""
    packed, current = [], [BOS_ID]
    for i in np.random.default_rng(seed).permutation(len(rows)):
        sentence = rows[i][1:limit - 1] + [EOS_ID]
        if len(current) + len(sentence) > limit:
            packed.append(current)
            current = [BOS_ID]
        current += sentence
    return packed + [current] if len(current) > 1 else packed


class MaskedLanguageModelLoss(nn.Module):
    """BERT's pre-training objective as one module: the summed cross-entropy of the masked
    positions (twice: the loss, and the NLL logged); only they are projected."""

    def __init__(self, model: MaskedLanguageModel):
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor, positions: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        return projected_nll(self.model.body(inputs), positions, self.model.output_projection, target)


class MaskedLanguageModelTask(RowsTask):
    """BERT's pre-training on unlabelled rows; each batch masked with a seed of its own place."""

    kind = MASKED_LM

    def __init__(self, run: FamilyRun):
        super().__init__(MaskedLanguageModel(run.model_config), run.tokenizer)
        self.rows, self.options, self.seed = rows_of(run.arrays, "train"), run.options, run.config.seed
        mask_id = self.options["mask_id"]
        self.special = torch.tensor([PAD_ID, BOS_ID, EOS_ID, UNK_ID, mask_id])

    def read(self, rows: np.ndarray, widths: tuple[int, int], where: tuple[int, int]) -> TensorBatch:
        tokens = pad([self.rows[i] for i in rows] + [[BOS_ID]] * (MIN_ROWS - len(rows)), width=widths[0])
        # Masked on the CPU with a generator of the batch's own, so that a seed masks alike on every
        # device, and a resumed run as an uninterrupted one.
        generator = torch.Generator().manual_seed(batch_seed(self.seed, where))
        inputs, labels = mask_tokens(tokens, self.options["mask_id"], self.model.config.vocab_size, self.special,
                                     generator, self.options["mask_rate"])
        positions = (labels != IGNORED).flatten().nonzero().squeeze(1)
        if not positions.numel():  # a batch of a few short rows drew no token: mask its first ordinary one
            ordinary = (~torch.isin(tokens, self.special)).flatten().nonzero().squeeze(1)[:1]
            inputs.view(-1)[ordinary] = self.options["mask_id"]
            positions = ordinary
        return TensorBatch((inputs, positions, tokens.flatten()[positions]), positions.numel())

    def objective(self) -> MaskedLanguageModelLoss:
        return MaskedLanguageModelLoss(self.model)

    def checkpoint_config(self) -> dict[str, Any]:
        return {"kind": MASKED_LM, **{k: self.options[k] for k in ("text_form", "mask_rate", "pack")}}


def pretrain_mlm(texts: list[str], out: Path, model_config: ModelConfig, config: TrainConfig, vocab_size: int = 8000,
                 form: TextForm = TextForm(), overwrite: bool = False, mask_rate: float = BERT_MASKED,
                 pack: int | None = None) -> Trainer:
    """BERT's pre-training on unlabelled sentences, into the run `out` (its last checkpoint is what
    fine-tuning starts from). `mask_rate`: the share of tokens to predict, BERT's 15% by default.
    Wettig et al. (2023) found 40% beat 15% for BERT-large (larger models favour higher rates): more
    tokens predicted per step, at the cost of less context left to predict them from. `pack`: rows
    of several sentences, at most this many tokens (`pack_sentences`); None: one sentence a row."""
    if not 0 < mask_rate <= MOST_MASKED:
        raise InputError(f"mask_rate {mask_rate}: must be above 0 and at most {MOST_MASKED}")
    if pack is not None:
        positions = position_limit(model_config)
        most = config.batch_tokens if positions is None else min(config.batch_tokens, positions)
        if not isinstance(pack, int) or isinstance(pack, bool) or not 3 <= pack <= most:
            raise InputError(f"pack {pack!r}: must be a whole number from 3 to {most} (the batch's tokens"
                             + ("" if positions is None else " and the model's learned positions") + ")")

    def build() -> FamilyRun:
        check_output_dir(out, "run", is_run, overwrite)
        lines = [t.lower() for t in texts] if form.lowercase else texts
        tokenizer = learn_tokenizer(lines, vocab_size, config.seed, (MASK,))
        rows = form.rows(tokenizer, lines)
        rows = Rows.of(pack_sentences(rows, pack, config.seed) if pack is not None else rows)
        check_rows_fit(rows, config.batch_tokens)
        encoder = dataclasses.replace(model_config, vocab_size=tokenizer.vocab_size, n_decoder_layers=0)
        options = {"kind": MASKED_LM, "text_form": dataclasses.asdict(form), "mask_rate": mask_rate, "pack": pack,
                   "mask_id": tokenizer.processor.piece_to_id(MASK)}
        return FamilyRun(out, encoder, config, options, tokenizer, rows.arrays("train"))

    return train_family(out, config, MaskedLanguageModelTask, build, overwrite)


class ClassifierTask(RowsTask):
    """Fine-tuning (or training from scratch) on labelled rows [CLS] + sentence."""

    kind, second, unit = CLASSIFIER, "correct", "sentences"

    def __init__(self, run: FamilyRun):
        o = run.options
        super().__init__(EncoderClassifier(run.model_config, len(o["labels"]), o["pooling"]), run.tokenizer)
        self.options = o
        self.rows, self.labels = rows_of(run.arrays, "train"), run.arrays["train.labels"]
        self.valid = rows_of(run.arrays, "valid")
        if o["pretrained"] and not run.resuming:  # a resumed run's weights come from its checkpoint
            directory, _, config = open_checkpoint(o["pretrained"], MASKED_LM)
            self.model.body.load_state_dict(load_weights(MaskedLanguageModel(config), directory).body.state_dict())
        self.valid_labels = run.arrays.get("valid.labels")

    def read(self, rows: np.ndarray, widths: tuple[int, int], where: tuple[int, int]) -> TensorBatch:
        return labelled_batch([self.rows[i] for i in rows], self.labels[rows], widths[0])

    def objective(self) -> ClassificationLoss:
        return ClassificationLoss(self.model)

    def validate(self, autocast: Autocast) -> tuple[dict[str, Any], float]:
        order = np.argsort(self.valid.lengths(), kind="stable")
        batches = (labelled_batch([self.valid[i] for i in chunk], self.valid_labels[chunk])
                   for chunk in np.array_split(order, max(1, len(order) // 64)))
        accuracy = accuracy_of(self.objective(), batches, autocast)
        return {"valid_accuracy": accuracy}, accuracy

    def checkpoint_config(self) -> dict[str, Any]:
        return {"kind": CLASSIFIER, **{k: self.options[k] for k in ("labels", "pooling", "text_form", "pretrained")}}

    def describe(self, metrics: dict[str, Any]) -> str:
        return f"valid accuracy {100 * metrics['valid_accuracy']:.2f}%"


def labelled_batch(rows: list[list[int]], labels: np.ndarray, width: int | None = None) -> TensorBatch:
    """Rows padded to `width` (at least MIN_ROWS of them: a padding row is [CLS] alone, labelled
    IGNORED) and their labels."""
    extra = MIN_ROWS - len(rows)
    tokens = pad(rows + [[BOS_ID]] * extra, width=width)
    gold = torch.cat([torch.from_numpy(np.asarray(labels, dtype=np.int64)), torch.full((max(extra, 0),), IGNORED)])
    return TensorBatch((tokens, gold), len(rows))


def train_classifier(train: tuple[list[str], list[str]], valid: tuple[list[str], list[str]] | None, out: Path,
                     model_config: ModelConfig, config: TrainConfig, init: str | Path | None = None,
                     label_names: list[str] | None = None, vocab_size: int = 8000, form: TextForm = TextForm(),
                     overwrite: bool = False, pooling: Pooling = "cls") -> tuple[Trainer, float | None]:
    """Fine-tune (from a `masked-lm` checkpoint or run `init`, whose vocabulary and text form it
    keeps) or train from scratch on labelled sentences, classifying the `pooling` vector (model.
    family.EncoderClassifier), into the run `out`, whose checkpoints/best has the best validation
    accuracy. Returns the trainer and that accuracy."""
    names, shown = _label_names(train[1], valid, label_names, pooling)

    def build() -> FamilyRun:
        check_output_dir(out, "run", is_run, overwrite)
        pretrained = _pretrained(init, model_config)
        tokenizer = pretrained[0] if pretrained else learn_tokenizer(
            [t.lower() for t in train[0]] if form.lowercase else train[0], vocab_size, config.seed, (MASK,))
        text_form = pretrained[1] if pretrained else form
        encoder = pretrained[2] if pretrained else dataclasses.replace(
            model_config, vocab_size=tokenizer.vocab_size, n_decoder_layers=0)
        arrays = _labelled_arrays("train", train, names, tokenizer, text_form, config.batch_tokens)
        if valid is not None:
            arrays |= _labelled_arrays("valid", valid, names, tokenizer, text_form, None)
        options = {"kind": CLASSIFIER, "labels": shown, "pooling": pooling,
                   "text_form": dataclasses.asdict(text_form), "pretrained": pretrained[3] if pretrained else None}
        return FamilyRun(out, encoder, config, options, tokenizer, arrays)

    trainer = train_family(out, config, ClassifierTask, build, overwrite)
    return trainer, trainer.position.best_score


def _pretrained(init: str | Path | None, model_config: ModelConfig
                ) -> tuple[Tokenizer, TextForm, ModelConfig, str] | None:
    """A `masked-lm` checkpoint's (or run's) vocabulary, text form, model config (with the
    fine-tuning's dropout) and resolved path; None without `init`."""
    if init is None:
        return None
    directory, init_config, pretrained = open_checkpoint(init, MASKED_LM)
    return (text_tokenizer(directory, pretrained), TextForm.of(init_config, directory),
            dataclasses.replace(pretrained, dropout=model_config.dropout), str(directory.resolve()))


def _label_names(labels: list[str], valid: tuple[list[str], list[str]] | None, label_names: list[str] | None,
                 pooling: str) -> tuple[list[str], list[str]]:
    """The training labels in sorted order, and the names shown for them; InputError for bad ones."""
    if pooling not in POOLINGS:
        raise InputError(f"pooling {pooling!r}: one of {', '.join(POOLINGS)}")
    names = sorted(set(labels))
    if len(names) < 2:
        raise InputError(f"the training data has {len(names)} label ({', '.join(names)}): "
                         "a classifier needs two or more")
    if label_names is not None and (len(set(label_names)) != len(label_names) or not all(label_names)):
        raise InputError(f"--label-names {','.join(label_names)}: names must be distinct and not empty")
    if label_names is not None and len(label_names) != len(names):
        raise InputError(f"--label-names gives {len(label_names)} names for the {len(names)} labels "
                         f"{', '.join(names)} (in this order)")
    if valid is not None and set(valid[1]) - set(names):
        raise InputError(f"validation labels {sorted(set(valid[1]) - set(names))} are not among the training labels")
    return names, label_names or names


def _labelled_arrays(name: str, data: tuple[list[str], list[str]], names: list[str], tokenizer: Tokenizer,
                     form: TextForm, batch_tokens: int | None) -> dict[str, np.ndarray]:
    rows = Rows.of(form.rows(tokenizer, data[0]))
    if batch_tokens is not None:
        check_rows_fit(rows, batch_tokens)
    return rows.arrays(name) | {f"{name}.labels": np.array([names.index(label) for label in data[1]], dtype=np.int64)}


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
