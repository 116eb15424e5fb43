"""The Transformer's family: pretrain-mlm, train-classifier and classify (the encoder, BERT's way),
train-lm and generate (the decoder, GPT's way), train-vit (a Vision Transformer on the digits)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aiayn.commands.options import (MOST_LAYERS, POSITIVE, TrainingDefaults, add_sampling_arguments,
                                    add_training_arguments, number, read_input, training_config)
from aiayn.commands.recipes import add_config_argument
from aiayn.errors import InputError
from aiayn.model.config import BERT_MASKED, MOST_MASKED, POOLINGS, ModelConfig

# ViT on 8 x 8 digits: a small encoder, pre-norm as in the ViT paper.
VIT_MODEL = dict(d_model=64, n_heads=4, d_ff=128, n_encoder_layers=4, n_decoder_layers=0, dropout=0.1,
                 norm_placement="pre")


def add_family_training(p: argparse.ArgumentParser, preset: str | None, batch_tokens: int | None = 4000,
                        text: bool = True, lr_scale: float = 1.0) -> None:
    """What every descendant's training takes: the training engine's options (aiayn.training), and
    for text its vocabulary and sentence length."""
    add_config_argument(p)
    if text:
        p.add_argument("--vocab-size", type=POSITIVE, default=8000)
        p.add_argument("--max-length", type=number(int, 3), default=128, help="subwords a sentence is cut to")
    defaults = TrainingDefaults(eval_every=200, log_every=20, lr_scale=lr_scale, save_every=200,
                                batch_tokens=batch_tokens, batch_help="tokens per batch, padding included")
    groups = add_training_arguments(p, defaults)
    if preset is not None:  # the ViT has one size of its own
        groups.model.add_argument("--preset", default=preset, choices=sorted(ModelConfig.PRESETS))
        groups.model.add_argument("--layers", type=number(int, 1, MOST_LAYERS),
                                  help="layers in the stack (default: the preset's)")
    else:
        groups.optimisation.add_argument("--batch-size", dest="batch_tokens", type=POSITIVE, default=64,
                                         help="images per batch")


def add_pretrain_mlm(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("pretrain-mlm", help="pre-train an encoder as BERT does: masked-language modelling")
    p.add_argument("--text", nargs="+", help="plain or .gz text, one sentence a line (.tsv: column 1)")
    p.add_argument("--lowercase", action="store_true", help="lowercase all text (as GLUE's SST-2 is)")
    p.add_argument("--mask-rate", type=number(float, above=0.0, maximum=MOST_MASKED), default=BERT_MASKED,
                   help="share of the tokens to predict (BERT's 0.15); of those 80%% become <mask>, 10%% a random "
                   "token, 10%% stay")
    p.add_argument("--pack", type=number(int, 3), metavar="N",
                   help="several sentences to a row, [CLS] s1 </s> s2 </s> ..., at most N tokens (at most --batch-tokens; "
                   "sentences cut to --max-length first, and to N); default: one sentence a row")
    add_family_training(p, preset="small", batch_tokens=4000)
    p.set_defaults(run=_pretrain_mlm)


def add_train_classifier(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("train-classifier", help="train a sentence classifier: the encoder, BERT's way")
    p.add_argument("--train", help="TSV whose header names a 'sentence' and a 'label' column")
    p.add_argument("--valid", help="TSV like --train; the best validation accuracy is kept")
    p.add_argument("--init", help="a pretrain-mlm checkpoint to start from: its size, vocabulary and text form are "
                   "kept (--preset, --vocab-size, --max-length and --lowercase are not used; --layers is refused)")
    p.add_argument("--label-names", help="names for the labels in sorted order, e.g. NEGATIVE,POSITIVE for 0,1")
    p.add_argument("--lowercase", action="store_true",
                   help="lowercase the text, in training and in use (with --init: as the pre-training did)")
    p.add_argument("--pooling", choices=POOLINGS, default="cls",
                   help="the sentence's vector: the [CLS] output (BERT's) or the mean output over its tokens")
    add_family_training(p, preset="small", batch_tokens=4000)
    p.set_defaults(run=_train_classifier)


def add_train_lm(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("train-lm", help="train a language model: the decoder alone, GPT's way")
    p.add_argument("--text", nargs="+", help="plain or .gz text, one sentence a line")
    p.add_argument("--valid", nargs="+", help="text for validation perplexity; the best is kept")
    add_family_training(p, preset="small", batch_tokens=6000)
    p.set_defaults(run=_train_lm)


def add_train_vit(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("train-vit", help="train a Vision Transformer on scikit-learn's digits (no download)")
    add_family_training(p, preset=None, batch_tokens=None, text=False, lr_scale=0.3)
    p.set_defaults(run=_train_vit)


def add_classify(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("classify", help="label sentences with a classifier (arguments or stdin): LABEL<TAB>SCORE")
    _add_checkpoint_and_device(p)
    p.add_argument("texts", nargs="*")
    p.set_defaults(run=_classify)


def add_generate(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("generate", help="continue a prompt with a language model")
    _add_checkpoint_and_device(p)
    add_sampling_arguments(p)
    p.add_argument("--prompt", default="")
    p.add_argument("--max-new-tokens", type=POSITIVE, default=50)
    p.add_argument("--n", type=POSITIVE, default=1, help="how many continuations")
    p.set_defaults(run=_generate)


def _add_checkpoint_and_device(p: argparse.ArgumentParser) -> None:
    """The model a using verb loads, and where it runs."""
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--device", default="cpu")


# What a new run is made of: not taken with --resume (the run has its data and settings).
DATA_FLAGS = ("text", "train", "valid", "init", "label_names")


def _starting(args: argparse.Namespace, needed: str | None, validates: bool) -> bool:
    """Whether the verb starts a run (False: it resumed one, as --resume asked); a new run needs
    its data, the flag `needed`, and validation data to average validated states."""
    from aiayn.runtime import check_device

    check_device(args.device)
    if args.resume:
        _resume_of_this_kind(args)
        return False
    if needed and not getattr(args, needed.lstrip("-").replace("-", "_")):
        raise InputError(f"{needed}: give the training data (or --resume RUN to continue a run)")
    if args.average_last > 1 and not validates:
        raise InputError(f"--average-last {args.average_last}: nothing is validated to average"
                         + (" (give --valid)" if hasattr(args, "valid") else ""))
    return True


def _resume_of_this_kind(args: argparse.Namespace) -> None:
    """Go on with the run --resume names, which must be of the verb's kind; data flags are refused."""
    from aiayn.checkpoint import read_config
    from aiayn.commands.translation import resume_any
    from aiayn.kinds import TRANSLATOR, kind_trained_by

    given = [name for name in DATA_FLAGS if getattr(args, name, None)]
    if given:
        raise InputError(f"--{given[0].replace('_', '-')}: not with --resume (the run keeps its own data)")
    run = Path(args.resume)
    task = read_config(run).get("task") if (run / "config.json").is_file() else None
    found = task.get("kind") if isinstance(task, dict) else TRANSLATOR
    wanted = kind_trained_by(args.verb).name
    if found != wanted:
        raise InputError(f"--resume {run}: a {found} run, not a {wanted} one (`aiayn train --resume` "
                         "goes on with a run of any kind)")
    resume_any(args)


def _model_config(args: argparse.Namespace, **defaults) -> ModelConfig:
    layers = getattr(args, "layers", None)  # each descendant keeps its own stack and empties the other
    overrides = {k: v for k, v in dict(dropout=args.dropout, n_encoder_layers=layers, n_decoder_layers=layers).items()
                 if v is not None}
    return ModelConfig.preset(getattr(args, "preset", "tiny"), **{**defaults, **overrides})


def _pretrain_mlm(args: argparse.Namespace) -> int:
    if not _starting(args, "--text", validates=False):
        return 0
    from aiayn.family.classifier import TextForm, pretrain_mlm, read_text

    config, model = training_config(args), _model_config(args)
    form = TextForm(args.max_length, args.lowercase)
    trainer = pretrain_mlm(read_text(args.text), Path(args.out), model, config, args.vocab_size, form,
                           args.overwrite, args.mask_rate, args.pack)
    if trainer.group.is_main:
        print(f"pre-trained {trainer.position.step} steps in {trainer.position.train_seconds / 60:.1f} min; "
              f"wrote {args.out}")
    return 0


def _train_classifier(args: argparse.Namespace) -> int:
    if args.init and args.layers:
        raise InputError("--layers: not used with --init (the pre-trained checkpoint's depth is kept)")
    if not _starting(args, "--train", validates=args.valid is not None):
        return 0
    from aiayn.family.classifier import TextForm, read_labelled, train_classifier

    config, model = training_config(args), _model_config(args)
    train, valid = read_labelled(args.train), read_labelled(args.valid) if args.valid else None
    names = [name.strip() for name in args.label_names.split(",")] if args.label_names else None
    trainer, accuracy = train_classifier(train, valid, Path(args.out), model, config, args.init, names,
                                         args.vocab_size, TextForm(args.max_length, args.lowercase), args.overwrite,
                                         pooling=args.pooling)
    if trainer.group.is_main:
        print(f"wrote {args.out}" + (f"; validation accuracy {100 * accuracy:.2f}%" if accuracy is not None else ""))
    return 0


def _classify(args: argparse.Namespace) -> int:
    from aiayn.family.classifier import TextClassifier
    from aiayn.runtime import check_device

    check_device(args.device)
    classifier = TextClassifier.from_checkpoint(args.checkpoint, args.device, announce=True)
    texts = args.texts or read_input(None)
    sys.stdout.write("".join(f"{label}\t{score:.4f}\n" for label, score in classifier.classify(texts)))
    return 0


def _train_lm(args: argparse.Namespace) -> int:
    if not _starting(args, "--text", validates=args.valid is not None):
        return 0
    from aiayn.family.classifier import read_text
    from aiayn.family.lm import train_lm

    config, model = training_config(args), _model_config(args)
    valid = read_text(args.valid) if args.valid else None
    trainer, ppl = train_lm(read_text(args.text), valid, Path(args.out), model, config, args.vocab_size,
                            args.max_length, args.overwrite)
    if trainer.group.is_main:
        print(f"wrote {args.out}" + (f"; validation perplexity {ppl:.2f}" if ppl is not None else ""))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from aiayn.decoding.search import Sampling
    from aiayn.family.lm import TextGenerator
    from aiayn.runtime import check_device

    if args.n > 1 and not args.sample:
        raise InputError(f"--n {args.n} without --sample: the most probable continuation is the same every time")
    check_device(args.device)
    generator = TextGenerator.from_checkpoint(args.checkpoint, args.device, announce=True)
    sampling = Sampling(args.temperature, args.top_k, args.top_p, args.seed) if args.sample else None
    for _ in range(args.n):
        print(generator.generate(args.prompt, args.max_new_tokens, sampling))
    return 0


def _train_vit(args: argparse.Namespace) -> int:
    if not _starting(args, None, validates=True):
        return 0
    from aiayn.family.vit import train_vit

    trainer, accuracy = train_vit(Path(args.out), _model_config(args, **VIT_MODEL), training_config(args),
                                  overwrite=args.overwrite)
    if trainer.group.is_main:
        print(f"wrote {args.out}; test accuracy {100 * accuracy:.2f}%")
    return 0
