"""What several verbs share: the parser class, argument types, output checks, and option groups
declared once (decoding, sampling, a raw corpus, training's budget, schedule and device)."""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiayn.data.bpe_dropout import MOST_SEGMENTATIONS
from aiayn.errors import InputError
from aiayn.training.schedule import DECAYS


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2), like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def number(kind: type, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None) -> Callable[[str], float]:
    """An argparse type: an int or float within bounds (`above` is an exclusive lower bound)."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is below the minimum of {minimum}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"{text} must be above {above}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{text} is above the maximum of {maximum}")
        return value
    return parse


POSITIVE = number(int, minimum=1)
MOST_WIDTH = 65536  # --d-model, --d-ff, --heads: 16x big's d_ff; a typo should not allocate the machine away
MOST_LAYERS = 48  # --layers: far deeper than trains on one machine here; a typo should not build thousands
SEED = number(int, 0, 2**32 - 1)
FRACTION = number(float, minimum=0.0, maximum=0.999)
PICTURES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def output_file(path: str | None, flag: str, inputs: tuple[str | None, ...] = (),
                suffixes: tuple[str, ...] = ()) -> Path | None:
    """Check an output file's place before any work: its folder exists, it is not a folder, not
    one of the command's inputs, and (for pictures) of a kind that can be written."""
    if path is None:
        return None
    out = Path(path)
    if out.is_dir():
        raise InputError(f"{flag} {out}: is a folder, not a file")
    if not out.parent.is_dir():
        raise InputError(f"{flag} {out}: folder {out.parent} does not exist")
    for given in filter(None, inputs):
        if out.exists() and Path(given).exists() and out.samefile(given):
            raise InputError(f"{flag} {out}: is also an input of this command; it would be overwritten")
    if suffixes and out.suffix.lower() not in suffixes:
        raise InputError(f"{flag} {out}: write a {', '.join(suffixes)} file")
    return out


def read_input(path: str | None) -> list[str]:
    """The lines of a file, or of stdin when no file is given."""
    from aiayn.data.corpus import decode_lines, read_lines

    return read_lines(path) if path else decode_lines(sys.stdin.buffer, "<stdin>")


def add_weights_arguments(p: argparse.ArgumentParser) -> None:
    """--device and how a checkpoint's weights are held: for the verbs that decode."""
    p.add_argument("--device", default="cpu")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--bf16", action="store_true", help="bfloat16 weights (faster on CPUs with avx512_bf16, GPUs)")
    weights.add_argument("--int8", action="store_true", help="int8 linear layers, quantised dynamically (CPU)")


def add_decoding_arguments(p: argparse.ArgumentParser, beam: int = 4) -> None:
    p.add_argument("--checkpoint", required=True, help="a checkpoint, or a run directory (averaged, best or last)")
    p.add_argument("--beam", type=POSITIVE, default=beam, help="beam size (§6.1: 4); 1 = greedy")
    p.add_argument("--alpha", type=number(float, 0.0, 10.0), default=0.6, help="GNMT length penalty ((5+|Y|)/6)^alpha")
    p.add_argument("--batch-tokens", type=POSITIVE,
                   help="decoding batch size in tokens x beams (8,000 on a CPU, 262,144 on a GPU)")
    add_moses_text_argument(p)
    add_weights_arguments(p)


def add_ensemble_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ensemble", nargs="+", metavar="CHECKPOINT",
                   help="decode with these checkpoints (or run directories) too, averaging the models' "
                   "next-token probabilities at each step; they share --checkpoint's tokenizer")


def add_moses_text_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--moses-text", action="store_true",
                   help="the model reads and writes lowercased Moses-tokenised text (bench/multi30k_tok.py write): "
                   "raw input is made so, and the output detokenised (automatic for a model trained with "
                   "`aiayn train --moses-text`)")


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sample", action="store_true", help="sample instead of the most probable token")
    p.add_argument("--temperature", type=number(float, 0.01, 100.0), default=1.0)
    p.add_argument("--top-k", type=number(int, 0), default=0)
    p.add_argument("--top-p", type=number(float, above=0.0, maximum=1.0), default=1.0)
    p.add_argument("--seed", type=SEED)


def add_corpus_arguments(data: argparse._ArgumentGroup) -> None:
    """Raw parallel files and how to prepare them (aiayn.data.prepared): for `prepare` and `train`."""
    data.add_argument("--train-src", dest="train_src", help="source side, one sentence a line (plain or .gz)")
    data.add_argument("--train-tgt", dest="train_tgt", help="target side, line-aligned with the source")
    data.add_argument("--valid-src", dest="valid_src")
    data.add_argument("--valid-tgt", dest="valid_tgt")
    data.add_argument("--vocab-size", dest="vocab_size", type=POSITIVE, help="shared BPE vocabulary size (8000)")
    data.add_argument("--max-length", dest="max_length", type=POSITIVE,
                      help="skip pairs with a side longer than this many subwords (250)")
    data.add_argument("--sample-sentences", dest="sample_sentences", type=POSITIVE,
                      help="learn the vocabulary on a random sample of this many sentences (1,000,000)")
    data.add_argument("--lowercase", action="store_true", default=None,
                      help="the vocabulary lowercases all text, in training and in use: the model reads and writes "
                           "lowercase (as the Multi30k papers' data; its sacreBLEU is then case-insensitive)")
    data.add_argument("--source-lang", dest="source_lang",
                      help="language code (e.g. de): kept in a run's checkpoints; the Moses rules of --moses-text")
    data.add_argument("--target-lang", dest="target_lang", help="likewise, of the target side")
    data.add_argument("--moses-text", dest="moses_text", action="store_true", default=None,
                      help="train on the Multi30k papers' text: the corpus lowercased, punctuation-normalised and "
                           "Moses-tokenised in --source-lang and --target-lang before the vocabulary is learned; the "
                           "model is then given raw text and writes plain lowercase text, in validation and in use")
    data.add_argument("--bpe-dropout", dest="bpe_dropout", type=FRACTION,
                      help="segment the training pairs with BPE-dropout: each merge left out with this probability "
                           "(Provilkov et al. 2020; 0.1 there); translation keeps the plain segmentation")
    data.add_argument("--segmentations", type=number(int, 1, MOST_SEGMENTATIONS),
                      help="with --bpe-dropout: copies of the training pairs, each segmented anew (1)")
    data.add_argument("--workers", type=POSITIVE,
                      help="processes that encode the corpus (default: the CPUs; none for a small corpus)")


@dataclass(frozen=True)
class TrainingDefaults:
    """A training verb's own defaults for the options every training verb takes."""
    eval_every: int
    log_every: int
    lr_scale: float = 1.0
    save_every: int = 500
    batch_tokens: int | None = None  # None: the verb's batches are not counted in tokens (the ViT's images)
    batch_help: str | None = None


@dataclass(frozen=True)
class TrainingGroups:
    """The groups add_training_arguments made, for a verb to add its own options to."""
    model: argparse._ArgumentGroup
    optimisation: argparse._ArgumentGroup
    stopping: argparse._ArgumentGroup
    device: argparse._ArgumentGroup


def add_training_arguments(p: argparse.ArgumentParser, defaults: TrainingDefaults) -> TrainingGroups:
    """The options of every training verb (`train` and the family's), declared once: where the run
    goes, the model's dropout, batches, the §5.3 schedule and Adam, the budget, validation,
    checkpoints and logging, the device. Every kind trains on the same engine (aiayn.training)."""
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="new run directory")
    target.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly where it stopped")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    groups = TrainingGroups(p.add_argument_group("model"), p.add_argument_group("optimisation (§5.3, §5.4)"),
                            p.add_argument_group("stopping, validation, checkpoints"), p.add_argument_group("device"))
    groups.model.add_argument("--dropout", type=FRACTION)
    _add_optimisation(groups.optimisation, defaults)
    _add_stopping(groups.stopping, defaults)
    groups.device.add_argument("--device", default="cpu", help="where the steps run (cpu, cuda, cuda:N)")
    groups.device.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPUs with avx512_bf16, GPUs)")
    groups.device.add_argument("--compile", action="store_true", help="torch.compile the model with its loss")
    return groups


def _add_optimisation(opt: argparse._ArgumentGroup, defaults: TrainingDefaults) -> None:
    if defaults.batch_tokens is not None:
        opt.add_argument("--batch-tokens", dest="batch_tokens", type=POSITIVE, default=defaults.batch_tokens,
                         help=defaults.batch_help)
    opt.add_argument("--batch-widths", dest="batch_widths", type=POSITIVE,
                     help="lengths batches are padded to, chosen from the data (20): at most twice as many batch "
                          "shapes")
    opt.add_argument("--accumulate", type=POSITIVE, default=1, help="batches per optimizer step")
    opt.add_argument("--warmup", dest="warmup_steps", type=POSITIVE,
                     help="steps of the learning rate's linear warm-up (§5.3; default: 6%% of the steps the budget "
                     "allows, at most the paper's 4,000, said in the log)")
    opt.add_argument("--lr-scale", dest="lr_scale", type=number(float, above=0.0), default=defaults.lr_scale,
                     help="factor on the §5.3 learning rate")
    opt.add_argument("--decay", choices=DECAYS, default="inverse-sqrt",
                     help="the rate: §5.3's (warm-up, then 1/sqrt(step)), or 'linear': the same warm-up times the "
                     "fraction of the budget left, BERT's linear decay to 0 at the end of the budget (with a time "
                     "budget the rates depend on the machine's speed)")
    opt.add_argument("--adam-beta1", dest="adam_beta1", type=FRACTION, default=0.9)
    opt.add_argument("--adam-beta2", dest="adam_beta2", type=FRACTION, default=0.98)
    opt.add_argument("--adam-eps", dest="adam_eps", type=number(float, above=0.0), default=1e-9)
    opt.add_argument("--clip-norm", dest="clip_norm", type=number(float, 0.0), default=0.0, help="0 = no clipping")
    opt.add_argument("--seed", type=SEED, default=1)


def _add_stopping(stop: argparse._ArgumentGroup, defaults: TrainingDefaults) -> None:
    stop.add_argument("--max-steps", dest="max_steps", type=POSITIVE)
    stop.add_argument("--max-epochs", dest="max_epochs", type=POSITIVE)
    stop.add_argument("--time-budget", type=number(float, above=0.0), help="minutes of training steps")
    stop.add_argument("--eval-every", dest="eval_every", type=POSITIVE, default=defaults.eval_every)
    stop.add_argument("--valid-share", dest="valid_share", type=number(float, above=0.0, maximum=1.0),
                      help="skip scheduled validations while they have taken more than this share of the "
                           "training time (0.05); the last step always validates")
    stop.add_argument("--average-last", dest="average_last", type=number(int, 1, 100), default=1,
                      help="validate the mean of the last N (at most 100) validated states (§6.1's checkpoint "
                      "averaging); the best is kept as checkpoints/best")
    stop.add_argument("--save-every", dest="save_every", type=POSITIVE, default=defaults.save_every)
    stop.add_argument("--keep-last", dest="keep_last", type=POSITIVE, default=5)
    stop.add_argument("--log-every", dest="log_every", type=POSITIVE, default=defaults.log_every)


def training_config(args: argparse.Namespace, **values):
    """The TrainConfig of a training verb's arguments (checked before anything is read or written)."""
    from aiayn.training.config import TrainConfig

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    return TrainConfig(**{**given, "time_budget_s": time_budget_s(args), **values})


def stopping_config(args: argparse.Namespace):
    """The stopping rules given with --resume (None: the run's own), and refuse --config there."""
    from aiayn.training.config import TrainConfig

    if getattr(args, "config", None):
        raise InputError(f"--config {args.config}: not with --resume (a resumed run keeps its own settings; "
                         "--max-steps, --max-epochs or --time-budget extend it)")
    stopping = dict(max_steps=args.max_steps, max_epochs=args.max_epochs, time_budget_s=time_budget_s(args))
    return TrainConfig(**stopping) if any(stopping.values()) else None


def time_budget_s(args: argparse.Namespace) -> float | None:
    """--time-budget (minutes) in seconds."""
    return args.time_budget * 60 if args.time_budget else None
