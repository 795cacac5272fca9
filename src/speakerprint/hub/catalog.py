"""The public speaker models speakerprint loads by name, each pinned to a revision and the sha256
of every file it needs.

A name is an alias (``wespeaker-resnet34``) or the hub id exactly as users copy it
(``pyannote/wespeaker-voxceleb-resnet34-LM``); both are matched without regard to case. Every fact
in an entry (parameters, training data, published EER, licence) names its source, and
``speakerprint models`` prints them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

__all__ = ["CATALOG", "DEFAULT_ALIAS", "HubFile", "PretrainedModel", "find_model", "suggest"]

DEFAULT_ALIAS = "speakerprint-ecapa-so762"


@dataclass(frozen=True)
class HubFile:
    """One file of a hub repository at the entry's revision.

    Attributes:
        name: path inside the repository.
        sha256: hex digest of its content; a download that does not hash to it is deleted.
        size: bytes, for the error that tells a user what to fetch by hand.
    """

    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class PretrainedModel:
    """A public model, where its files are and what it is.

    Attributes:
        alias: the short name (``wespeaker-resnet34``).
        hub_id: ``owner/name`` on the Hugging Face hub, or ``""`` for a model that ships in a
            package (``package`` says which).
        revision: the hub commit the files are pinned to.
        files: every file the conversion reads; the first is the checkpoint.
        source: the converter (``speakerprint.convert`` source) that reads them.
        config: the file among ``files`` that the converter reads as the config, if separate.
        package: for a model that ships inside a pip package: ``(distribution, file in it)``.
        aliases: further names (the ModelScope id of a mirrored model, older names).
        architecture, parameters, embed_dim, sample_rate, features, training_data: what it is.
        published: the published result (EER and the trial list), ``source``: where it is
            published; ``licence``: the model's licence as its card states it.
    """

    alias: str
    hub_id: str
    revision: str
    files: tuple[HubFile, ...]
    source: str
    architecture: str
    parameters: int
    embed_dim: int
    sample_rate: int
    features: str
    training_data: str
    published: str
    published_source: str
    licence: str
    config: str | None = None
    package: tuple[str, str] | None = None
    aliases: tuple[str, ...] = field(default=())
    note: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n in (self.alias, self.hub_id, *self.aliases) if n)

    @property
    def checkpoint(self) -> str:
        return self.files[0].name


CATALOG: tuple[PretrainedModel, ...] = ()


def find_model(
    name: str, catalog: tuple[PretrainedModel, ...] | None = None
) -> PretrainedModel | None:
    """The entry whose alias or hub id is ``name`` (any case), or ``None``."""
    wanted = name.strip().lower()
    for entry in CATALOG if catalog is None else catalog:
        if wanted in (n.lower() for n in entry.names):
            return entry
    return None


def suggest(name: str, catalog: tuple[PretrainedModel, ...] | None = None) -> str:
    """`` (did you mean 'x'?)`` for a near miss, else ``""``."""
    names = [n for entry in (CATALOG if catalog is None else catalog) for n in entry.names]
    close = difflib.get_close_matches(name, [*names, DEFAULT_ALIAS], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
