"""Every YAML recipe under recipes/ stays valid, found by glob so that a new recipe is tested with
no new code: it opens with a comment, loads through ``load_recipe``, each phase's model is
registered and takes the phase's features, its crops hold at least one frame, its batches fit its
sampler and loss, its schedules are defined over its steps, and a phase that freezes the encoder
has weights to start from. recipes/README.md lists every recipe.

``recipe_problems`` does the checking and returns messages instead of asserting, so that
``test_the_checks_catch`` can show each check failing on a broken recipe.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from speakerprint.errors import ConfigError
from speakerprint.models import create_model, list_models
from speakerprint.train.config import ExperimentConfig, load_recipe
from speakerprint.train.schedule import learning_rate

REPO = Path(__file__).resolve().parents[2]
RECIPES_DIR = REPO / "recipes"
RECIPES = sorted(RECIPES_DIR.rglob("*.yaml"))
LOSSES_WITHOUT_HEAD = {"triplet"}


def _ids(paths: list[Path]) -> list[str]:
    return [p.relative_to(RECIPES_DIR).as_posix() for p in paths]


def crop_frames(cfg: ExperimentConfig) -> int:
    """Fbank frames in one training crop (Kaldi's snip_edges: whole windows only)."""
    samples = round(cfg.data.crop_s * cfg.features.sample_rate)
    window, shift = cfg.features.window_size, cfg.features.window_shift
    return 0 if samples < window else 1 + (samples - window) // shift


def phase_problems(index: int, cfg: ExperimentConfig) -> list[str]:
    """What is wrong with one phase's config; ``index`` is its place in the recipe (0: first)."""
    problems: list[str] = []
    name, args = cfg.model.name, cfg.model.args
    if name not in list_models():
        problems.append(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    else:
        try:
            with torch.device("meta"):  # shapes only: no memory, no init cost
                model = create_model(name, **args)
        except (ConfigError, TypeError, ValueError) as e:
            problems.append(f"model {name} with args {args} cannot be built: {e}")
        else:
            if model.feat_dim != cfg.features.num_mel_bins:
                problems.append(
                    f"model {name} takes feat_dim={model.feat_dim} features, but "
                    f"features.num_mel_bins={cfg.features.num_mel_bins}"
                )
            frames = crop_frames(cfg)
            if frames < max(model.min_frames, 1):
                problems.append(
                    f"data.crop_s={cfg.data.crop_s} gives {frames} frames, the model needs "
                    f"{model.min_frames}"
                )

    data, loss, train = cfg.data, cfg.loss, cfg.train
    if data.sampler == "speaker_balanced":
        k = data.utterances_per_speaker
        if k < 2:
            problems.append(f"speaker_balanced needs utterances_per_speaker (K) >= 2, got {k}")
        elif data.batch_size % k:
            problems.append(
                f"data.batch_size={data.batch_size} is not a multiple of utterances_per_speaker={k}"
            )
        elif data.batch_size // k < 2:
            problems.append(
                f"speaker_balanced needs at least 2 speakers a batch, got "
                f"{data.batch_size} // {k} = {data.batch_size // k}"
            )
    if loss.name == "triplet" and data.sampler != "speaker_balanced":
        problems.append(
            f"loss.name=triplet mines positives within the batch: it needs "
            f"data.sampler=speaker_balanced, got {data.sampler}"
        )

    if train.freeze_encoder:
        if loss.name in LOSSES_WITHOUT_HEAD:
            problems.append(f"train.freeze_encoder with loss.name={loss.name}: nothing to train")
        if index == 0 and not cfg.model.init_from:
            problems.append(
                "train.freeze_encoder in the first phase needs model.init_from: a frozen encoder "
                "needs trained weights, and there is no predecessor phase to take them from"
            )

    if bool(data.dev_manifest) != bool(data.dev_trials):
        problems.append("data.dev_manifest and data.dev_trials go together: set both or neither")
    if train.max_steps <= 0:
        problems.append(f"train.max_steps must be positive, got {train.max_steps}")
        return problems
    if cfg.schedule.warmup_steps >= train.max_steps:
        problems.append(
            f"schedule.warmup_steps={cfg.schedule.warmup_steps} leaves no step of "
            f"train.max_steps={train.max_steps} after the warm-up"
        )
    if loss.margin_warmup_steps > train.max_steps:
        problems.append(
            f"loss.margin_warmup_steps={loss.margin_warmup_steps} is past "
            f"train.max_steps={train.max_steps}: the margin never reaches {loss.margin}"
        )
    steps = {0, cfg.schedule.warmup_steps, train.max_steps // 2, train.max_steps - 1}
    for step in sorted(s for s in steps if 0 <= s < train.max_steps):
        try:
            lr = learning_rate(
                step, optim=cfg.optim, schedule=cfg.schedule, max_steps=train.max_steps
            )
        except (ConfigError, ValueError, ZeroDivisionError) as e:
            problems.append(f"the learning rate is undefined at step {step}: {e}")
            break
        if not (math.isfinite(lr) and lr >= 0):
            problems.append(f"the learning rate at step {step} is {lr}")
            break
    return problems


def recipe_problems(path: Path) -> list[str]:
    """Everything wrong with the recipe at ``path``, one message each; empty when it is valid."""
    problems: list[str] = []
    first_line = path.read_text(encoding="utf-8").lstrip("\ufeff").splitlines()[:1]
    if not first_line or not first_line[0].startswith("#"):
        problems.append(
            "the file must open with a comment: where its numbers come from, the corpus sizes "
            "behind its step counts and the command that runs it"
        )
    try:
        phases = load_recipe(path)
    except ConfigError as e:
        return [*problems, f"does not load: {e}"]
    for index, phase in enumerate(phases):
        label = f"phase {phase.name}: " if phase.name else ""
        problems += [label + p for p in phase_problems(index, phase.config)]
    return problems


def test_recipes_are_found():
    folders = {p.parent.relative_to(RECIPES_DIR).as_posix() for p in RECIPES}
    assert {"voxceleb2", "librispeech"} <= folders, f"recipes found: {_ids(RECIPES)}"


@pytest.mark.parametrize("path", RECIPES, ids=_ids(RECIPES))
def test_recipe_is_valid(path):
    problems = recipe_problems(path)
    assert not problems, f"{path.relative_to(REPO)}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("path", RECIPES, ids=_ids(RECIPES))
def test_recipe_is_listed_in_the_readme(path):
    readme = (RECIPES_DIR / "README.md").read_text(encoding="utf-8")
    rel = path.relative_to(RECIPES_DIR).as_posix()
    assert f"`{rel}`" in readme, f"add a row for `{rel}` to the table of recipes/README.md"


# A small valid recipe of two phases, and one-line breakages of it, each with the message that
# recipe_problems must give.
HEADER = "# A test recipe: numbers from nowhere.\n"
VALID = {
    "data": {"batch_size": 64, "crop_s": 2.0},
    "features": {"num_mel_bins": 80},
    "model": {"name": "ecapa_tdnn_c512"},
    "loss": {"name": "softmax"},
    "optim": {"name": "sgd", "lr": 0.1},
    "schedule": {"name": "exponential", "warmup_steps": 10, "min_lr": 1.0e-4},
    "train": {"max_steps": 100},
    "phases": [
        {"name": "pretrain"},
        {
            "name": "triplet",
            "data": {"sampler": "speaker_balanced", "utterances_per_speaker": 4},
            "loss": {"name": "triplet", "margin": 0.1},
        },
    ],
}


def _set(data: dict, dotted: str, value) -> None:
    """Set ``a.b.c`` in a nested mapping; a number picks an item of a list (the phases)."""
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    node[last] = value


BREAKAGES = {
    "typo in the model name": ({"model.name": "ecapa_tdnn_c521"}, "unknown model"),
    "unknown model argument": ({"model.args": {"channel": 512}}, "cannot be built"),
    "features do not fit the model": ({"features.num_mel_bins": 64}, "feat_dim=80"),
    "K does not divide the batch": (
        {"phases.1.data.utterances_per_speaker": 5},
        "not a multiple",
    ),
    "K of one": ({"phases.1.data.utterances_per_speaker": 1}, "K) >= 2"),
    "one speaker a batch": ({"phases.1.data.utterances_per_speaker": 64}, "at least 2 speakers"),
    "triplet on random batches": (
        {"phases.1.data.sampler": "random"},
        "needs data.sampler=speaker_balanced",
    ),
    "frozen encoder with no predecessor": (
        {"phases.0.train": {"freeze_encoder": True}},
        "no predecessor",
    ),
    "frozen encoder with no head": (
        {"phases.1.train": {"freeze_encoder": True}},
        "nothing to train",
    ),
    "crop shorter than a frame": ({"data.crop_s": 0.01}, "gives 0 frames"),
    "exponential decay upwards": ({"schedule.min_lr": 1.0}, "learning rate is undefined"),
    "warm-up as long as the run": ({"schedule.warmup_steps": 100}, "no step"),
    "margin never reached": ({"loss.margin_warmup_steps": 101}, "never reaches"),
    "dev manifest without trials": ({"data.dev_manifest": "dev.jsonl"}, "go together"),
    "unknown config key": ({"train.max_step": 10}, "does not load"),
    "no header comment": ({}, "open with a comment"),
}


def _write(tmp_path: Path, data: dict, *, header: str = HEADER) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_the_valid_test_recipe_passes(tmp_path):
    assert recipe_problems(_write(tmp_path, VALID)) == []


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_the_checks_catch(tmp_path, breakage):
    changes, message = BREAKAGES[breakage]
    data = yaml.safe_load(yaml.safe_dump(VALID))  # a deep copy
    for dotted, value in changes.items():
        _set(data, dotted, value)
    header = "" if breakage == "no header comment" else HEADER
    problems = recipe_problems(_write(tmp_path, data, header=header))
    assert any(message in p for p in problems), problems
