"""Making a translator: demo, download, prepare, train (§5), average (§6.1) and plot."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aiayn.commands.options import (FRACTION, MOST_LAYERS, MOST_WIDTH, PICTURES, POSITIVE, SEED, TrainingDefaults,
                                    TrainingGroups, add_corpus_arguments, add_training_arguments, number, output_file,
                                    stopping_config, training_config)
from aiayn.commands.recipes import add_config_argument
from aiayn.errors import InputError
from aiayn.model.config import ModelConfig

RAW_CORPUS_FLAGS = {"train_src": "--train-src", "train_tgt": "--train-tgt", "valid_src": "--valid-src",
                    "valid_tgt": "--valid-tgt", "vocab_size": "--vocab-size", "max_length": "--max-length",
                    "sample_sentences": "--sample-sentences", "lowercase": "--lowercase",
                    "bpe_dropout": "--bpe-dropout", "segmentations": "--segmentations", "moses_text": "--moses-text",
                    "multi30k": "--multi30k"}
TRAIN_DEFAULTS = TrainingDefaults(eval_every=500, log_every=10, batch_tokens=8000,
                                  batch_help="source+target tokens per batch, padding included (the log says its "
                                             "share; fairseq's --max-tokens counts one side: its 4,096 is about "
                                             "8,000 here)")


def add_demo(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("demo", help="train a small English->German number-word translator (no download) and test it")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo run in --out")
    p.add_argument("--minutes", type=number(float, above=0.0), default=2.0, help="training time")
    p.add_argument("--seed", type=SEED, default=1)
    p.set_defaults(run=_demo)


def add_prepare(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("prepare", help="prepare a parallel corpus of any size for training: vocabulary, token arrays")
    p.add_argument("--out", required=True, help="DATA folder to write (new or empty; --overwrite replaces prepared data)")
    add_corpus_arguments(p.add_argument_group("corpus"))
    p.add_argument("--seed", type=SEED, default=1, help="for the vocabulary's sample")
    p.add_argument("--overwrite", action="store_true", help="replace data prepared from other inputs in --out")
    p.set_defaults(run=_prepare)


def add_download(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("download", help="download the paper's WMT14 English-German data (§5.1) as plain text")
    p.add_argument("corpus", choices=["wmt14-en-de"])
    p.add_argument("--out", required=True, help="folder to write (new or empty): train.{en,de}, newstest2013.{en,de}, "
                   "newstest2014.{en,de}")
    p.add_argument("--archives", help="where the downloaded archives are kept, or already are (default: the cache)")
    p.add_argument("--overwrite", action="store_true", help="replace what an earlier download wrote in --out")
    p.set_defaults(run=_download)


def add_train(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("train", help="train a translator on parallel text (§5); under torchrun, data-parallel "
                         "(with --resume: any kind of run)")
    add_config_argument(p)
    data = p.add_argument_group("data (prepared, or raw files prepared into RUN/data)")
    data.add_argument("--data", help="a folder made by `aiayn prepare` (with --resume: where the run's data moved)")
    data.add_argument("--multi30k", metavar="SRC-TGT", help="Multi30k language pair, e.g. de-en (train + val splits)")
    data.add_argument("--data-dir", help="local copy of the Multi30k raw files (default: download once to the cache)")
    add_corpus_arguments(data)
    _add_translator_training(add_training_arguments(p, TRAIN_DEFAULTS))
    p.set_defaults(run=_train)


def _add_translator_training(groups: TrainingGroups) -> None:
    """What only the translator's training takes, in the groups every training verb has."""
    model = groups.model
    model.add_argument("--preset", default="small", choices=sorted(ModelConfig.PRESETS))
    # The preset's shape, changed field by field (Table 3's rows vary N, d_model, d_ff and h the same way).
    model.add_argument("--layers", type=number(int, 1, MOST_LAYERS),
                       help="N: layers in the encoder and in the decoder (§3.1; default: the preset's)")
    model.add_argument("--d-model", dest="d_model", type=number(int, 2, MOST_WIDTH),
                       help="d_model: even, and a multiple of --heads")
    model.add_argument("--d-ff", dest="d_ff", type=number(int, 1, MOST_WIDTH),
                       help="the feed-forward inner size (§3.3)")
    model.add_argument("--heads", dest="n_heads", type=number(int, 1, MOST_WIDTH), help="h: attention heads (§3.2.2)")
    model.add_argument("--positional-encoding", choices=["sinusoidal", "learned"])
    model.add_argument("--norm-placement", choices=["post", "pre"])
    groups.optimisation.add_argument("--label-smoothing", dest="label_smoothing", type=FRACTION, default=0.1)
    groups.optimisation.add_argument("--rdrop", type=number(float, 0.0), default=0.0,
                                     help="R-Drop's weight on the KL of two dropout passes of each batch (0: one pass); "
                                          "twice the compute and activations (--batch-tokens counts one pass), "
                                          "and train_loss includes the KL term")
    groups.stopping.add_argument("--bleu-sentences", dest="bleu_sentences", type=POSITIVE,
                                 help="validate BLEU on the first N sentences")


def add_average(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("average", help="average the last N checkpoints of a run (§6.1)")
    p.add_argument("run_dir")
    p.add_argument("--last", type=POSITIVE, default=5)
    p.add_argument("--out", help="a new or empty folder (default: RUN_DIR/checkpoints/average, replaced)")
    p.add_argument("--overwrite", action="store_true", help="replace the aiayn checkpoint in --out")
    p.set_defaults(run=_average)


def add_plot(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("plot", help="draw a run's loss, learning rate and BLEU curves to a PNG")
    p.add_argument("run_dir")
    p.add_argument("--out", help="default: RUN_DIR/curves.png")
    p.set_defaults(run=_plot)


def _train(args: argparse.Namespace) -> int:
    from aiayn.runtime import check_device

    check_device(args.device)
    given = {flag: getattr(args, dest) for flag, (dest, _) in MODEL_FLAGS.items() if getattr(args, dest) is not None}
    if args.resume:
        if given:
            raise InputError(f"{next(iter(given))}: not with --resume (a resumed run keeps its model)")
        corpus = [flag for name, flag in RAW_CORPUS_FLAGS.items() if getattr(args, name, None) is not None]
        if corpus:
            raise InputError(f"{corpus[0]}: not with --resume (a resumed run keeps its data and vocabulary; "
                             "--data says where the data moved)")
        return resume_any(args)
    from aiayn.training.trainer import train

    # The numbers are checked before anything is read, downloaded or written.
    model = ModelConfig.preset(args.preset, **{field: value for flag, value in given.items()
                                               for field in MODEL_FLAGS[flag][1]})
    config = training_config(args, **_training_data(args))
    train(args.out, model, config, overwrite=args.overwrite, workers=args.workers)
    return 0


# The flags that change the preset's fields: flag -> (its argparse dest, the ModelConfig fields it sets).
MODEL_FLAGS = {"--layers": ("layers", ("n_encoder_layers", "n_decoder_layers")), "--d-model": ("d_model", ("d_model",)),
               "--d-ff": ("d_ff", ("d_ff",)), "--heads": ("n_heads", ("n_heads",)),
               "--dropout": ("dropout", ("dropout",)),
               "--positional-encoding": ("positional_encoding", ("positional_encoding",)),
               "--norm-placement": ("norm_placement", ("norm_placement",))}


def resume_any(args: argparse.Namespace) -> int:
    """Go on with a run of any kind: a translator's, or a descendant's (its config names the task)."""
    from aiayn.checkpoint import read_config

    stopping = stopping_config(args)
    run = Path(args.resume)
    if run.is_dir() and (run / "config.json").is_file() and "task" in read_config(run):
        from aiayn.family.kinds import resume_family

        resume_family(run, stopping)
        return 0
    from aiayn.training.trainer import train

    train(run, config=stopping, resume=True, data=getattr(args, "data", None))
    return 0


def _training_data(args: argparse.Namespace) -> dict[str, str]:
    """Where a new run's data comes from: prepared DATA, Multi30k's raw files, or the user's raw files
    (already in the arguments); the TrainConfig values to add."""
    if args.data:
        given = [flag for name, flag in RAW_CORPUS_FLAGS.items() if getattr(args, name, None) is not None]
        if given:
            raise InputError(f"{given[0]} belongs to `aiayn prepare` (or to training from raw files): "
                             f"--data {args.data} is already prepared")
        return {}
    if args.multi30k:
        if args.train_src or args.train_tgt:
            raise InputError(f"--multi30k {args.multi30k} (given or from the recipe) and --train-src/--train-tgt: "
                             "give one corpus (a recipe's data can be replaced only by a recipe without it)")
        from aiayn.data.multi30k import split_path

        src_lang, _, tgt_lang = args.multi30k.partition("-")
        for flag, given, lang in (("--source-lang", args.source_lang, src_lang), ("--target-lang", args.target_lang, tgt_lang)):
            if given not in (None, lang):
                raise InputError(f"{flag} {given}: --multi30k {args.multi30k} says {lang}")
        return dict(source_lang=src_lang, target_lang=tgt_lang,
                    train_src=str(split_path("train", src_lang, args.data_dir)),
                    train_tgt=str(split_path("train", tgt_lang, args.data_dir)),
                    valid_src=str(split_path("val", src_lang, args.data_dir)),
                    valid_tgt=str(split_path("val", tgt_lang, args.data_dir)))
    if not (args.train_src and args.train_tgt):
        raise InputError("no training data: give --data DATA (see aiayn prepare), --train-src and --train-tgt, "
                         "or --multi30k SRC-TGT")
    return {}


def _prepare(args: argparse.Namespace) -> int:
    from aiayn.data.moses import moses_languages
    from aiayn.data.prepared import PrepareOptions, prepare

    if not (args.train_src and args.train_tgt):
        raise InputError("give the corpus: --train-src and --train-tgt")
    language = next((flag for flag, value in (("--source-lang", args.source_lang), ("--target-lang", args.target_lang))
                     if value), None)
    if language and not args.moses_text:
        raise InputError(f"{language}: only with --moses-text here (prepared data keeps no languages otherwise; "
                         "aiayn train takes them)")
    defaults = PrepareOptions()
    options = PrepareOptions(args.vocab_size or defaults.vocab_size, args.max_length or defaults.max_length,
                             args.sample_sentences or defaults.sample_sentences, args.seed, args.workers,
                             bool(args.lowercase), args.bpe_dropout or defaults.bpe_dropout,
                             args.segmentations or defaults.segmentations,
                             moses_languages(args.moses_text, args.source_lang, args.target_lang))
    prepare(args.out, args.train_src, args.train_tgt, args.valid_src, args.valid_tgt, options, args.overwrite)
    return 0


def _download(args: argparse.Namespace) -> int:
    from aiayn.data.wmt14 import fetch

    fetch(args.out, args.archives, args.overwrite)
    return 0


def _average(args: argparse.Namespace) -> int:
    from aiayn.checkpoint import AVERAGE_DIR, average_checkpoints, is_checkpoint, step_checkpoints
    from aiayn.files import check_output_dir

    paths = step_checkpoints(Path(args.run_dir))[-args.last:]
    if not paths:
        raise InputError(f"{args.run_dir}: no step checkpoints to average (is it a training run?)")
    if args.out:  # the user's folder: only a new, empty, or (with --overwrite) checkpoint folder
        out = Path(args.out)
        check_output_dir(out, "checkpoint", is_checkpoint, args.overwrite)
    else:  # the run's own checkpoints/average, which re-averaging replaces
        out = Path(args.run_dir) / "checkpoints" / AVERAGE_DIR
    if len(paths) < args.last:
        print(f"note: {args.run_dir} has {len(paths)} checkpoints, fewer than --last {args.last}", file=sys.stderr)
    print(f"averaged {', '.join(p.name for p in paths)} into {average_checkpoints(paths, out)}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from aiayn.evaluation.plots import plot_run

    print(plot_run(args.run_dir, output_file(args.out, "--out", suffixes=PICTURES)))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from aiayn.demo import run_demo

    run_demo(args.out, minutes=args.minutes, seed=args.seed, overwrite=args.overwrite)
    return 0
