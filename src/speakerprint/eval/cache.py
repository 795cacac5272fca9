"""An on-disk cache of embeddings, so that re-scoring a trial list never re-embeds its audio.

One ``.npz`` file per (model, speakerprint version, test condition) in a cache folder, named
``<model fingerprint[:16]>_<version>_<condition key>.npz``. The model fingerprint
(:func:`~speakerprint.models.bundle.model_fingerprint`) hashes the weights file and the
architecture and feature settings of ``config.json``; the version is part of the key because a
new version may compute features differently. Each entry is keyed by
``utt_id`` and checked against the utterance's ``path`` and ``duration_s``: an entry for a file
that moved or changed length is embedded again, never reused.

Files are written atomically, so a crash never leaves half a file. A file that cannot be read,
or that was written for another bundle or condition, is ignored with a warning and rewritten.

>>> cache = EmbeddingCache("runs/cache", model_fingerprint("bundle"))  # doctest: +SKIP
>>> lookup = cache.get_or_compute(Condition(), utts, lambda todo: embed_condition(b, todo))
...     # doctest: +SKIP
>>> lookup.num_computed, lookup.num_cached  # doctest: +SKIP
(0, 520)
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speakerprint.data.manifest import Utterance
from speakerprint.eval.conditions import Condition
from speakerprint.models.bundle import model_fingerprint
from speakerprint.utils.io import atomic_write_bytes

__all__ = ["CachedEmbeddings", "EmbeddingCache", "bundle_fingerprint", "model_fingerprint"]

log = logging.getLogger(__name__)

CACHE_FORMAT = "speakerprint-embedding-cache"
CACHE_VERSION = 1
_ARRAYS = ("meta", "utt_ids", "paths", "durations", "embeddings")


#: The model fingerprint, under the name callers of this module have used
#: (:func:`speakerprint.models.bundle.model_fingerprint`).
bundle_fingerprint = model_fingerprint


def _version_tag(version: str) -> str:
    """``version`` as a file-name part: PEP 440 allows "+" and "!", file systems may not."""
    return re.sub(r"[^A-Za-z0-9.]", "-", version)


@dataclass(frozen=True)
class CachedEmbeddings:
    """What :meth:`EmbeddingCache.get_or_compute` returns.

    Attributes:
        embeddings: ``{utt_id: (D,) float32}`` for every utterance asked for.
        num_computed: how many were embedded now (and added to the cache file).
        num_cached: how many came from the cache file.
        path: the cache file.
    """

    embeddings: dict[str, np.ndarray]
    num_computed: int
    num_cached: int
    path: Path


class EmbeddingCache:
    """A folder of embedding files for one bundle, one file per test condition.

    Files are keyed on (model fingerprint, speakerprint version): another model or another
    version never reads them.

    Args:
        folder: the cache folder; created on the first write. Several bundles and versions can
            share it.
        fingerprint: :func:`~speakerprint.models.bundle.model_fingerprint` of the bundle whose
            embeddings go here. The caller must embed with that same bundle.
        version: the speakerprint version that embeds (default: this one).
    """

    def __init__(
        self, folder: str | os.PathLike, fingerprint: str, *, version: str | None = None
    ) -> None:
        if not fingerprint or not all(c in "0123456789abcdef" for c in fingerprint):
            raise ValueError(f"fingerprint must be a hex digest, got {fingerprint!r}")
        if version is None:
            from speakerprint import __version__ as version
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.version = version

    def path_for(self, condition: Condition) -> Path:
        name = f"{self.fingerprint[:16]}_{_version_tag(self.version)}_{condition.key()}.npz"
        return self.folder / name

    def _meta(self, condition: Condition) -> dict[str, object]:
        return {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "bundle_fingerprint": self.fingerprint,
            "speakerprint_version": self.version,
            "condition": condition.key(),
        }

    def load(self, condition: Condition) -> dict[str, tuple[str, float, np.ndarray]]:
        """The file's entries ``{utt_id: (path, duration_s, embedding)}``; ``{}`` when there is no
        file, and (with a warning) when it is unreadable or written for another bundle or
        condition."""
        path = self.path_for(condition)
        if not path.exists():
            return {}
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = [name for name in _ARRAYS if name not in npz.files]
                if missing:
                    raise ValueError(f"arrays {missing} are missing")
                meta = json.loads(str(npz["meta"]))
                utt_ids, paths = npz["utt_ids"], npz["paths"]
                durations, embeddings = npz["durations"], npz["embeddings"]
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
            log.warning("embedding cache %s is unreadable (%s): ignoring it, re-embedding", path, e)
            return {}
        expected = self._meta(condition)
        if meta != expected:
            changed = sorted(k for k in expected if meta.get(k) != expected[k])
            log.warning(
                "embedding cache %s is stale (%s differ from this bundle and condition): "
                "ignoring it, re-embedding",
                path,
                ", ".join(changed) or "extra fields",
            )
            return {}
        count = len(utt_ids)
        if (
            embeddings.ndim != 2
            or embeddings.shape[0] != count
            or paths.shape != (count,)
            or durations.shape != (count,)
            or not np.isfinite(embeddings).all()
        ):
            log.warning(
                "embedding cache %s is corrupt (inconsistent shapes or non-finite values): "
                "ignoring it, re-embedding",
                path,
            )
            return {}
        return {
            str(u): (str(p), float(d), e)
            for u, p, d, e in zip(utt_ids, paths, durations, embeddings)
        }

    def save(self, condition: Condition, entries: dict[str, tuple[str, float, np.ndarray]]) -> Path:
        """Write ``{utt_id: (path, duration_s, embedding)}`` as the condition's file, atomically."""
        path = self.path_for(condition)
        ids = sorted(entries)
        dim = len(next(iter(entries.values()))[2]) if entries else 0
        buffer = io.BytesIO()
        np.savez(
            buffer,
            meta=np.array(json.dumps(self._meta(condition), sort_keys=True)),
            utt_ids=np.array(ids, dtype=str),
            paths=np.array([entries[u][0] for u in ids], dtype=str),
            durations=np.array([entries[u][1] for u in ids], dtype=np.float64),
            embeddings=np.stack([entries[u][2] for u in ids]).astype(np.float32)
            if ids
            else np.zeros((0, dim), dtype=np.float32),
        )
        atomic_write_bytes(path, buffer.getvalue())
        return path

    def get_or_compute(
        self,
        condition: Condition,
        utts: Sequence[Utterance],
        compute: Callable[[list[Utterance]], dict[str, np.ndarray]],
    ) -> CachedEmbeddings:
        """Embeddings of ``utts``: from the file where it holds them, else from ``compute``.

        ``compute`` is called once, with only the utterances not in the file (or whose path or
        duration changed), and not at all when every one is there; what it returns is added to
        the file, which keeps the entries of other utterances.

        Raises:
            ValueError: ``compute`` did not return an embedding for every utterance it was given.
        """
        entries = self.load(condition)
        found: dict[str, np.ndarray] = {}
        todo: list[Utterance] = []
        for utt in dict((u.utt_id, u) for u in utts).values():
            entry = entries.get(utt.utt_id)
            if entry is not None and entry[0] == utt.path and entry[1] == float(utt.duration_s):
                found[utt.utt_id] = entry[2]
            else:
                todo.append(utt)
        path = self.path_for(condition)
        if todo:
            computed = compute(todo)
            missing = [u.utt_id for u in todo if u.utt_id not in computed]
            if missing:
                raise ValueError(
                    f"compute returned no embedding for {len(missing)} utterance(s), "
                    f"e.g. {missing[:5]}"
                )
            dims = {np.shape(e[2]) for e in entries.values()}
            dims |= {np.shape(computed[u.utt_id]) for u in todo}
            if len(dims) > 1:  # cannot happen with one bundle; keep only the new entries
                log.warning("embedding cache %s: embedding sizes differ, rewriting it", path)
                entries = {}
            for utt in todo:
                entries[utt.utt_id] = (
                    utt.path,
                    float(utt.duration_s),
                    np.asarray(computed[utt.utt_id], dtype=np.float32),
                )
                found[utt.utt_id] = entries[utt.utt_id][2]
            self.save(condition, entries)
        return CachedEmbeddings(
            embeddings=found,
            num_computed=len(todo),
            num_cached=len(found) - len(todo),
            path=path,
        )
