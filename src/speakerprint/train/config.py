"""Typed training configuration. YAML is its saved form; ``--set a.b=value`` overrides fields.

Unknown keys and values of the wrong type are errors (:class:`~speakerprint.errors.ConfigError`),
never silently ignored. The resolved config is saved beside the checkpoints of every run.

>>> cfg = load_config("recipes/demo.yaml", overrides=["optim.lr=0.002"])  # doctest: +SKIP
>>> cfg.optim.lr  # doctest: +SKIP
0.002
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from speakerprint.augment.config import AugmentConfig
from speakerprint.errors import ConfigError
from speakerprint.features import FbankConfig
from speakerprint.utils.config import dataclass_from_dict
from speakerprint.utils.io import atomic_write_text


@dataclass
class DataConfig:
    train_manifest: str = ""
    dev_manifest: str | None = None
    dev_trials: str | None = None
    description: str = ""  # the training data in words; saved in the bundle
    crop_s: float = 2.0  # training crop; shorter utterances are repeated to fill it
    batch_size: int = 64
    num_workers: int = 2
    eval_batch_size: int = 16
    # random: shuffled utterances; speaker_balanced: P = batch_size / K speakers x K utterances
    # each per batch, as triplet mining needs.
    sampler: Literal["random", "speaker_balanced"] = "random"
    utterances_per_speaker: int = 2  # K, for the speaker_balanced sampler
    # A `speakerprint shard` folder: train from its tar shards, read as a stream (one random crop
    # per utterance per epoch through a shuffle buffer), instead of train_manifest's files.
    train_shards: str | None = None
    shuffle_buffer: int = 1000  # crops held by each loader worker's shuffle buffer (shards only)


@dataclass
class ModelConfig:
    name: str = "ecapa_tdnn_c512"  # a registered factory, see `speakerprint models`
    args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of that factory
    # Start from another run's newest checkpoint (encoder weights, and the loss head when it has
    # the same shapes) or from a bundle (encoder only). Optimiser and step start afresh.
    init_from: str | None = None


@dataclass
class LossConfig:
    name: Literal["aam", "am", "softmax", "triplet"] = "aam"
    margin: float = 0.2  # aam: radians; am: cosine; triplet: cosine similarity
    scale: float = 30.0
    margin_warmup_steps: int = 0  # margin rises linearly from 0 over these steps
    mining: Literal["batch_hard", "semi_hard"] = "batch_hard"  # triplet only


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 2e-5
    momentum: float = 0.9  # sgd only
    grad_clip: float = 5.0  # max global grad norm; <= 0 disables


@dataclass
class ScheduleConfig:
    name: Literal["cosine", "cyclic", "constant", "exponential"] = "cosine"
    warmup_steps: int = 0
    min_lr: float = 1e-5
    cycle_steps: int = 1000  # cyclic: a full triangle (min -> lr -> min) takes this many steps


@dataclass
class TrainConfig:
    max_steps: int = 1000
    seed: int = 0
    device: str = "auto"  # auto: cuda if available, else cpu
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on cuda, fp32 on cpu
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    eval_every: int = 0  # dev EER every N steps (0: only at the start and the end)
    eval_at_start: bool = True
    num_threads: int = 0  # torch CPU threads; 0 keeps torch's default
    bundle_dtype: Literal["float32", "float16"] = "float32"
    freeze_encoder: bool = False  # train only the loss head (encoder in eval mode, no gradients)
    # A step whose loss or gradient norm is NaN/Inf is skipped (no update); this many in a row
    # stop the run with an error.
    max_bad_steps_in_a_row: int = 10
    # Records always go to RUN/metrics.jsonl; these mirror them. tensorboard: RUN/tensorboard
    # (auto: when the tensorboard package is installed); wandb: Weights & Biases, off by default.
    tensorboard: bool | Literal["auto"] = "auto"
    wandb: bool = False
    wandb_project: str = "speakerprint"
    curves_png: bool = True  # RUN/curves.png at the end (needs matplotlib, the viz extra)
    # Under torchrun: BatchNorm statistics over the global batch (every rank's frames), so N
    # processes train the model one process would; false keeps per-rank statistics (WeSpeaker's).
    sync_batchnorm: bool = True


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    features: FbankConfig = field(default_factory=FbankConfig)  # also sets the sample rate
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # off unless set

    def validate(self) -> None:
        """Refuse settings that cannot train together; :func:`~speakerprint.train.loop.train`
        calls it first. Checks that need the data (its speakers, its size) or the number of
        processes are made where those are known (:mod:`speakerprint.train.data`).

        Raises:
            ConfigError: naming the settings at fault.
        """
        data, train = self.data, self.train
        if bool(data.dev_manifest) != bool(data.dev_trials):
            raise ConfigError(
                "data.dev_manifest and data.dev_trials go together: set both or neither"
            )
        if train.max_bad_steps_in_a_row < 1:
            raise ConfigError(
                "train.max_bad_steps_in_a_row must be at least 1, got "
                f"{train.max_bad_steps_in_a_row}"
            )
        if data.train_shards:
            if data.sampler != "random":
                raise ConfigError(
                    f"data.sampler={data.sampler} picks utterances by speaker, which a stream of "
                    "shards cannot: use data.train_manifest for it"
                )
        elif not data.train_manifest:
            raise ConfigError("data.train_manifest (or data.train_shards) is required")
        if self.loss.name == "triplet" and data.sampler != "speaker_balanced":
            raise ConfigError(
                "loss.name=triplet mines triplets inside each batch: set data.sampler=speaker_balanced"
            )
        if data.sampler == "speaker_balanced":
            per_speaker = data.utterances_per_speaker
            if per_speaker < 2 or data.batch_size % per_speaker:
                raise ConfigError(
                    f"data.sampler=speaker_balanced needs data.utterances_per_speaker >= 2 "
                    f"dividing data.batch_size, got {per_speaker} and {data.batch_size}"
                )
            if data.batch_size // per_speaker < 2:
                raise ConfigError(
                    f"data.sampler=speaker_balanced takes data.batch_size / "
                    f"data.utterances_per_speaker = {data.batch_size // per_speaker} speakers per "
                    "batch; it must be between 2 and the number of training speakers"
                )


def _check_value(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` converted to type ``tp`` or raise ConfigError naming ``where``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in get_args(tp):
            try:
                return _check_value(value, option, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} is not of type {tp}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = get_args(tp)
        return [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _from_dict(tp, value, where)
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover


def _from_dict(cls: type, data: dict, where: str = "") -> Any:
    hints = get_type_hints(cls)
    return dataclass_from_dict(
        cls,
        data,
        label="config",
        where=where,
        convert=lambda name, value, key: _check_value(value, hints[name], key),
    )


def config_from_dict(data: dict) -> ExperimentConfig:
    """Build a validated config from a nested mapping (missing keys take their defaults)."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping at the top level, got {type(data).__name__}")
    return _from_dict(ExperimentConfig, data)


def config_to_dict(config: ExperimentConfig) -> dict:
    return dataclasses.asdict(config)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` overrides to a nested mapping; values are parsed as YAML scalars."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: cannot parse value: {e}") from None
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return data


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: the top level must be a mapping")
    return data


def load_config(
    path: str | os.PathLike | None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Read a one-phase YAML config (safe loader: no code runs), apply overrides, validate."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        data = _read_yaml(path)
        if "phases" in data:
            raise ConfigError(
                f"config {path} is a recipe of several phases: load it with load_recipe "
                "(`speakerprint train` runs every phase)"
            )
    data = apply_overrides(data, overrides or [])
    try:
        return config_from_dict(data)
    except ConfigError as e:
        where = f"config {path}: " if path is not None else ""
        raise ConfigError(f"{where}{e}") from None


@dataclass(frozen=True)
class Phase:
    """One training run of a recipe. ``name`` is its sub-folder of the run folder ('' for a
    recipe without phases, which trains into the run folder itself)."""

    name: str
    config: ExperimentConfig


def _merge(base: dict, over: dict) -> dict:
    """``over`` merged into a copy of ``base``: mappings merge key by key, other values replace."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


_PHASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> list[Phase]:
    """Read a recipe: one config, or a base config with a ``phases:`` list run in order.

    Each phase is a mapping with a ``name`` and any config sections, merged over the rest of the
    file; ``overrides`` apply to every phase, after the merge. A later phase starts from the
    previous phase's run unless it sets ``model.init_from`` itself (see :func:`run_recipe`).

    >>> [p.name for p in load_recipe("recipes/deep_speaker_small_speechocean762.yaml")]  # doctest: +SKIP
    ['1_softmax', '2_triplet', '3_softmax_frozen']
    """
    path = Path(path)
    data = _read_yaml(path)
    phases = data.pop("phases", None)
    if phases is None:
        return [Phase("", load_config(path, overrides))]
    if not isinstance(phases, list) or not phases:
        raise ConfigError(f"config {path}: phases must be a non-empty list of mappings")
    result: list[Phase] = []
    for i, item in enumerate(phases):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"config {path}: phase {i + 1} must be a mapping with a name")
        item = dict(item)
        name = item.pop("name")
        if not _PHASE_NAME.match(name) or name in {p.name for p in result}:
            raise ConfigError(
                f"config {path}: phase name {name!r} must be unique and a plain folder name"
            )
        merged = apply_overrides(_merge(copy.deepcopy(data), item), list(overrides or []))
        try:
            result.append(Phase(name, config_from_dict(merged)))
        except ConfigError as e:
            raise ConfigError(f"config {path}, phase {name}: {e}") from None
    return result


def save_config(config: ExperimentConfig, path: str | os.PathLike) -> None:
    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
