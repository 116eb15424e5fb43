"""Recipes as files: `--config FILE.toml` on the training verbs, and the recipes in recipes/."""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from aiayn.cli import build_parser, main, parse_args, verb_parser
from aiayn.commands.recipes import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))
# What each training verb requires on the command line besides --out (data paths: never in a recipe).
REQUIRED = {"train": [], "pretrain-mlm": ["--text", "t.txt"], "train-classifier": ["--train", "t.tsv"],
            "train-lm": ["--text", "t.txt"], "train-vit": []}
DATA_FLAGS = {"data", "data-dir", "train-src", "train-tgt", "valid-src", "valid-tgt", "text", "valid", "train", "init"}


def test_the_recipes_are_there() -> None:
    names = {path.stem for path in RECIPES}
    assert {"multi30k_de_en_small", "multi30k_en_de_small", "tatoeba_de_en_small", "koen_small", "sst2_pretrain_mlm",
            "sst2_classifier", "lm_small", "vit_digits", "gpu_base", "multi30k_en_de_tiny",
            "multi30k_en_de_tiny_lowercase", "multi30k_en_de_tiny_linear",
            "multi30k_en_de_tiny_bpe_dropout", "multi30k_en_de_tiny_linear_small_batch",
            "multi30k_en_de_tiny_tok", "multi30k_en_de_tiny_tok_rdrop"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_each_recipe_validates_against_its_verb(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    recipe = tomllib.loads(text)
    verb = recipe["verb"]
    assert text.startswith("#") and f"aiayn {verb} --config recipes/{path.name}" in text  # the header's command
    assert not DATA_FLAGS & set(recipe) and "shared" not in text  # data paths are the user's arguments
    values = load_recipe(str(path), verb, verb_parser(build_parser(), verb))
    args = parse_args([verb, "--config", str(path), "--out", "run", *REQUIRED[verb]])
    assert values and all(getattr(args, dest) == value for dest, value in values.items())
    assert args.max_steps or args.time_budget  # a recipe says when to stop


def test_the_multi30k_recipe_is_bench_multi30k_sh_train20() -> None:
    args = parse_args(["train", "--config", str(RECIPES[0].parent / "multi30k_de_en_small.toml"), "--out", "run"])
    assert (args.multi30k, args.preset, args.vocab_size, args.batch_tokens, args.warmup_steps, args.lr_scale,
            args.time_budget, args.eval_every, args.save_every, args.keep_last, args.bf16) == \
        ("de-en", "small", 8000, 9000, 150, 0.3, 20.0, 200, 200, 5, True)


def write(tmp_path: Path, text: str, name: str = "recipe.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_flags_on_the_command_line_override_the_recipe(tmp_path: Path) -> None:
    recipe = write(tmp_path, 'verb = "train"\nwarmup = 150\nbatch-tokens = 9000\nbf16 = true\npreset = "small"\n')
    args = parse_args(["train", "--config", recipe, "--out", "run", "--warmup", "77", "--preset", "tiny"])
    assert (args.warmup_steps, args.preset, args.batch_tokens, args.bf16) == (77, "tiny", 9000, True)
    assert parse_args(["train", "--out", "run"]).warmup_steps is None  # the parser's own default (fitted to the budget)
    vit = write(tmp_path, 'warmup = 33\nlr-scale = 0.5\n', "vit.toml")
    args = parse_args(["train-vit", "--config", vit, "--out", "run", "--lr-scale", "0.2"])
    assert (args.warmup_steps, args.lr_scale) == (33, 0.2)


def test_a_recipe_gives_required_flags_and_lists(tmp_path: Path) -> None:
    recipe = write(tmp_path, 'verb = "train-lm"\ntext = ["a.txt", "b.txt"]\nvalid = "v.txt"\ndecay = "linear"\n')
    args = parse_args(["train-lm", "--config", recipe, "--out", "run"])
    assert (args.text, args.valid, args.decay) == (["a.txt", "b.txt"], ["v.txt"], "linear")
    assert parse_args(["train-lm", "--config", recipe, "--out", "run", "--text", "c.txt"]).text == ["c.txt"]


BAD = [  # (recipe text, what the one line must name besides the file)
    ("batch_tokens = 9000\n", "key 'batch_tokens'"),  # unknown key (and the close match)
    ("no-such-flag = 1\n", "key 'no-such-flag'"),
    ("warmup = 0\n", "key 'warmup'"),  # below the flag's minimum
    ("warmup = 'many'\n", "key 'warmup'"),
    ("warmup = 1.5\n", "key 'warmup'"),
    ("lr-scale = true\n", "key 'lr-scale'"),
    ("bf16 = 'yes'\n", "key 'bf16'"),
    ("preset = 'huge'\n", "key 'preset'"),  # not one of the choices
    ("device = 0\n", "key 'device'"),
    ("preset = ['small']\n", "key 'preset'"),
    ("max-steps = {a = 1}\n", "key 'max-steps'"),
    ("warmup = \n", "line 1"),  # TOML syntax
    ("bf16 = true\nbf16 = false\n", "line 2"),
    ("out = 'runs/x'\n", "key 'out'"),
    ("resume = 'runs/x'\n", "key 'resume'"),
    ("overwrite = true\n", "key 'overwrite'"),
    ("verb = 'train-lm'\n", "key 'verb'"),
    ("config = 'other.toml'\n", "key 'config'"),
]


@pytest.mark.parametrize("text, named", BAD, ids=[text.split("\n")[0] for text, _ in BAD])
def test_a_bad_recipe_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                            named: str) -> None:
    recipe = write(tmp_path, text)
    with pytest.raises(SystemExit) as stop:
        main(["train", "--config", recipe, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and recipe in err and named in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("verb", ["pretrain-mlm", "train-classifier", "train-lm", "train-vit"])
def test_the_family_verbs_check_their_recipes(tmp_path: Path, capsys: pytest.CaptureFixture[str], verb: str) -> None:
    recipe = write(tmp_path, "label-smoothing = 0.2\n")  # the translator's flag, not theirs
    with pytest.raises(SystemExit) as stop:
        main([verb, "--config", recipe, "--out", str(tmp_path / "run"), *REQUIRED[verb]])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "key 'label-smoothing'" in err


def test_a_missing_or_unreadable_recipe_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path, named in ((tmp_path / "missing.toml", "no such file"), (tmp_path, "folder")):
        with pytest.raises(SystemExit) as stop:
            main(["train", "--config", str(path), "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1 and str(path) in err and named in err
    (tmp_path / "latin1.toml").write_bytes(b"preset = '\xe9'\n")
    with pytest.raises(SystemExit) as stop:
        main(["train", "--config", str(tmp_path / "latin1.toml"), "--out", str(tmp_path / "run")])
    assert stop.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_a_recipe_does_not_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = write(tmp_path, "max-steps = 5\n")
    assert main(["train", "--resume", str(tmp_path / "run"), "--config", recipe]) == 2
    assert "--resume" in capsys.readouterr().err


def test_train_help_shows_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["train", "--help"])
    assert stop.value.code == 0 and "--config FILE.toml" in capsys.readouterr().out


def test_the_command_line_imports_no_torch() -> None:
    code = ("import sys, aiayn.cli; aiayn.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_train_from_a_recipe_runs(number_corpus: dict[str, Path], tmp_path: Path) -> None:
    recipe = write(tmp_path, 'verb = "train"\npreset = "tiny"\nvocab-size = 300\nbatch-tokens = 600\nwarmup = 20\n'
                   "max-steps = 2\neval-every = 1000\nsave-every = 1000\nlog-every = 1\n")
    run = tmp_path / "run"
    assert main(["train", "--config", recipe, "--out", str(run), "--max-steps", "3",
                 "--train-src", str(number_corpus["train_en"]), "--train-tgt", str(number_corpus["train_de"])]) == 0
    training = json.loads((run / "config.json").read_text())["training"]
    assert (training["max_steps"], training["batch_tokens"], training["warmup_steps"]) == (3, 600, 20)
    steps = [json.loads(line).get("step", 0) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 3
