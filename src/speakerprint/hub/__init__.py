"""Public pretrained models by name: a catalog, downloads pinned to a revision and a sha256 per
file, and a cache of converted bundles, so that a model is fetched and converted once and every
later call reads only the cache.

>>> from speakerprint.hub import resolve_model
>>> bundle_folder = resolve_model("wespeaker-resnet34")  # doctest: +SKIP

``resolve_model`` takes whatever a user may type where a model is asked for: a catalog alias
(``wespeaker-resnet34``), a hub id exactly as copied (``pyannote/wespeaker-voxceleb-resnet34-LM``),
a local file or folder in the original toolkit's layout (converted once, without the network), a
speakerprint bundle folder, or ``None`` / ``"default"`` for the model that ships with the package.
"""

from __future__ import annotations

from speakerprint.hub.cache import cache_root
from speakerprint.hub.catalog import CATALOG, HubFile, PretrainedModel, find_model
from speakerprint.hub.resolve import is_cached, resolve_model

__all__ = [
    "CATALOG",
    "HubFile",
    "PretrainedModel",
    "cache_root",
    "find_model",
    "is_cached",
    "resolve_model",
]
