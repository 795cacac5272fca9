"""What every enrollment store shares: the records it returns, its errors, its checks, and
:class:`BaseEnrollmentStore`, the interface the SQLite and PostgreSQL back ends implement.

A store is made for one model: the model's fingerprint
(:func:`speakerprint.models.bundle.model_fingerprint`) and embedding size are recorded when the
store is created, and every write or query must name the same fingerprint, because embeddings of
two models live in different spaces and comparing them gives confident nonsense.

Identification compares a query with each speaker's mean: the enrollment embeddings are
length-normalised, averaged and normalised again, and the cosine of the normalised query with
that mean is the score. The best speaker is the answer when its score reaches the threshold,
otherwise the answer is "unknown" (``speaker=None``).
"""

from __future__ import annotations

import abc
import datetime
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speakerprint.errors import SpeakerprintError
from speakerprint.utils.linalg import l2_normalize_rows

__all__ = [
    "SCHEMA_VERSION",
    "MAX_NAME_CHARS",
    "STORE_FORMAT",
    "BaseEnrollmentStore",
    "Identification",
    "SpeakerEntry",
    "StoreError",
    "StoreUnavailableError",
    "check_speaker_name",
    "is_store_url",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STORE_FORMAT = "speakerprint-enrollment-store"
_URL_SCHEMES = ("postgresql://", "postgres://")
#: The longest speaker name a store takes, in characters (after stripping surrounding spaces).
MAX_NAME_CHARS = 256


class StoreError(SpeakerprintError, ValueError):
    """An enrollment store is missing, not a store, from a newer version, made for another model,
    or asked for something it does not hold (an unknown speaker, a wrong embedding size)."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached now: its PostgreSQL server is down, restarting or gone away
    mid-command, or an SQLite file stayed locked by another writer past the busy timeout.

    Nothing was half-written (every write is one transaction); the same call may succeed later.
    The HTTP service answers it with 503 and ``Retry-After``.
    """


@dataclass(frozen=True)
class SpeakerEntry:
    """One enrolled speaker: name, how many enrollment embeddings, and the files they came from."""

    name: str
    num_embeddings: int
    sources: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Identification:
    """The answer to "who is this?".

    Attributes:
        speaker: the best-scoring speaker, or None ("unknown") when its score is below threshold.
        score: the best cosine score (of the best speaker, whether accepted or not).
        threshold: the score the best speaker had to reach.
        candidates: the top-k ``(name, score)`` pairs, best first, accepted or not.
        speech_s: seconds of speech in the query, when whoever embedded it measured them
            (:mod:`speakerprint.inference.speech`; the CLI and the service do); else None.
    """

    speaker: str | None
    score: float
    threshold: float
    candidates: list[tuple[str, float]]
    speech_s: float | None = None

    @classmethod
    def decide(cls, candidates: list[tuple[str, float]], threshold: float) -> Identification:
        """The best of ``candidates`` (best first), or "unknown" when it scores below
        ``threshold``."""
        best_name, best_score = candidates[0]
        return cls(
            speaker=best_name if best_score >= threshold else None,
            score=best_score,
            threshold=float(threshold),
            candidates=candidates,
        )

    @classmethod
    def rank(
        cls,
        names: Sequence[str],
        means: np.ndarray,
        query: np.ndarray,
        threshold: float,
        top_k: int,
    ) -> Identification:
        """:meth:`decide` on the ``top_k`` best of speakers given by their unit-length mean
        embeddings (N, D), scored by cosine to ``query`` (D,)."""
        scores = means.astype(np.float64) @ normalise_rows(np.asarray(query, dtype=np.float64))
        order = np.argsort(-scores, kind="stable")[:top_k]
        return cls.decide([(names[i], float(scores[i])) for i in order], threshold)

    @property
    def known(self) -> bool:
        return self.speaker is not None

    def to_dict(self) -> dict:
        return {
            "speaker": self.speaker,
            "known": self.known,
            "score": self.score,
            "threshold": self.threshold,
            "candidates": [{"name": n, "score": s} for n, s in self.candidates],
            "speech_s": self.speech_s,
        }


def is_store_url(db: str | os.PathLike) -> bool:
    """Whether ``db`` names a PostgreSQL store (a ``postgresql://`` or ``postgres://`` URL)."""
    return isinstance(db, str) and db.lower().startswith(_URL_SCHEMES)


def check_speaker_name(name: object) -> str:
    """``name`` without surrounding spaces, or a StoreError: not a string, empty, or longer than
    :data:`MAX_NAME_CHARS`. Every ``enroll`` checks it; the CLI and the HTTP service check it
    before embedding anything, with the same message.

    Any other text is a name: it is stored as given, passed to the database as a parameter.

    >>> check_speaker_name("  alice ")
    'alice'
    """
    if not isinstance(name, str) or not name.strip():
        raise StoreError(f"a speaker name must be a non-empty string, got {name!r}")
    name = name.strip()
    if len(name) > MAX_NAME_CHARS:
        raise StoreError(
            f"a speaker name may have at most {MAX_NAME_CHARS} characters, got {len(name)}"
        )
    return name


def utc_now() -> str:
    """The current time as an ISO 8601 string in UTC, to the second, as stores record it."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


normalise_rows = l2_normalize_rows  # the name the stores use


class BaseEnrollmentStore(abc.ABC):
    """Enrolled speakers of one model; :class:`~speakerprint.inference.store.EnrollmentStore`
    (SQLite) and :class:`~speakerprint.inference.store.PgEnrollmentStore` (PostgreSQL) implement
    it, and :func:`~speakerprint.inference.store.open_store` opens either.

    The base owns the record of the model (the ``meta`` key/value rows), the checks every write
    and query make, and the messages; a back end stores and scores the embeddings.

    Attributes:
        path: where the store is: a file path, or a URL with its password hidden.
    """

    path: str | Path
    _meta: dict[str, str]

    # -- the record of the model -----------------------------------------------------------------

    @property
    def model_fingerprint(self) -> str:
        return self._meta["model_fingerprint"]

    @property
    def embed_dim(self) -> int:
        return int(self._meta["embed_dim"])

    @property
    def model_path(self) -> str | None:
        """The model path recorded on creation (a hint; may have moved since), or None."""
        return self._meta.get("model_path") or None

    @staticmethod
    def new_meta(model_fingerprint: str, embed_dim: int, model_path: str | None) -> dict[str, str]:
        """The ``meta`` rows of a new store."""
        return {
            "format": STORE_FORMAT,
            "schema_version": str(SCHEMA_VERSION),
            "model_fingerprint": model_fingerprint,
            "embed_dim": str(int(embed_dim)),
            "model_path": "" if model_path is None else str(model_path),
            "created_at": utc_now(),
        }

    def check_model(self, model_fingerprint: str, legacy_fingerprints: Sequence[str] = ()) -> None:
        """Raise StoreError unless ``model_fingerprint`` is the model this store was made for.

        A store that recorded one of ``legacy_fingerprints`` (the same model's fingerprint under
        a release that hashed its version in:
        :func:`~speakerprint.models.bundle.legacy_model_fingerprints`) is the same model: its
        record is rewritten to ``model_fingerprint``, in one transaction, and it passes.
        """
        stored = self.model_fingerprint
        if stored != model_fingerprint and stored in legacy_fingerprints:
            self._meta["model_fingerprint"] = self._replace_fingerprint(stored, model_fingerprint)
            log.info(
                "enrollment store %s: model fingerprint %s... (made by an older speakerprint) "
                "rewritten to %s...",
                self.path,
                stored[:16],
                model_fingerprint[:16],
            )
        if model_fingerprint != self.model_fingerprint:
            raise StoreError(
                f"enrollment store {self.path} was made with another model (fingerprint "
                f"{self.model_fingerprint[:16]}..., this one is {model_fingerprint[:16]}...): "
                "embeddings of different models cannot be compared; use the store's model "
                f"({self.model_path or 'path not recorded'}) or a new store"
            )

    def _check_opened(
        self,
        model_fingerprint: str | None,
        embed_dim: int | None,
        legacy_fingerprints: Sequence[str],
    ) -> None:
        """The checks of ``open``, once the meta rows are read; closes the store on failure."""
        try:
            problem = self._meta_problem(embed_dim)
            if problem is not None:
                raise StoreError(problem)
            if model_fingerprint is not None:
                self.check_model(model_fingerprint, legacy_fingerprints)
        except BaseException:
            self.close()
            raise

    def _meta_problem(self, embed_dim: int | None) -> str | None:
        """Why the meta rows are not a store this speakerprint can use with ``embed_dim``."""
        meta = self._meta
        if meta.get("format") != STORE_FORMAT:
            return f"{self.path} is not an enrollment store (format={meta.get('format')!r})"
        version = int(meta.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            return (
                f"enrollment store {self.path} has schema version {version}, newer than this "
                f"speakerprint understands ({SCHEMA_VERSION}); upgrade speakerprint"
            )
        if embed_dim is not None and int(embed_dim) != self.embed_dim:
            return (
                f"enrollment store {self.path} holds {self.embed_dim}-dimensional embeddings, "
                f"not {embed_dim}-dimensional ones"
            )
        return None

    @abc.abstractmethod
    def _replace_fingerprint(self, old: str, new: str) -> str:
        """In one transaction, set the recorded model fingerprint to ``new`` where it is still
        ``old``; return the fingerprint recorded afterwards (``new``, also when another process
        rewrote it first)."""

    # -- the checks every write and query make ---------------------------------------------------

    def _checked_enrollment(
        self,
        name: str,
        embeddings: np.ndarray | Sequence[np.ndarray],
        model_fingerprint: str,
        sources: Sequence[str | None] | None,
    ) -> tuple[str, np.ndarray, list[str | None]]:
        """The checks every ``enroll`` makes first: (name, vectors (K, D) float32, K sources)."""
        self.check_model(model_fingerprint)
        name = check_speaker_name(name)
        vectors = np.asarray(embeddings, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None]
        if vectors.ndim != 2 or vectors.shape[1] != self.embed_dim or len(vectors) == 0:
            raise StoreError(
                f"enrollment store {self.path}: expected embeddings of shape (K, {self.embed_dim})"
                f" with K >= 1, got {tuple(np.shape(embeddings))}"
            )
        if not np.isfinite(vectors).all():
            raise StoreError(f"enrollment store {self.path}: the embeddings contain NaN or Inf")
        if sources is None:
            sources = [None] * len(vectors)
        if len(sources) != len(vectors):
            raise StoreError(
                f"enrollment store {self.path}: {len(vectors)} embeddings but {len(sources)} "
                "sources"
            )
        return name.strip(), vectors, [None if s is None else str(s) for s in sources]

    def _checked_query(
        self, embedding: np.ndarray, model_fingerprint: str, top_k: int
    ) -> np.ndarray:
        """The checks every ``identify`` makes first: the query as (D,) float64."""
        self.check_model(model_fingerprint)
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        query = np.asarray(embedding, dtype=np.float64)
        if query.shape != (self.embed_dim,):
            raise StoreError(
                f"enrollment store {self.path}: expected a query of shape ({self.embed_dim},), "
                f"got {query.shape}"
            )
        if not np.isfinite(query).all():
            raise StoreError(f"enrollment store {self.path}: the query contains NaN or Inf")
        return query

    def _no_speakers_error(self) -> StoreError:
        return StoreError(f"enrollment store {self.path} has no speakers: enroll some first")

    def _unknown_speaker_error(self, name: str) -> StoreError:
        known = [s.name for s in self.speakers()]
        shown = ", ".join(known[:10]) + (" ..." if len(known) > 10 else "")
        return StoreError(
            f"enrollment store {self.path} has no speaker {name!r} (speakers: {shown or 'none'})"
        )

    # -- what a back end implements --------------------------------------------------------------

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abc.abstractmethod
    def enroll(
        self,
        name: str,
        embeddings: np.ndarray | Sequence[np.ndarray],
        *,
        model_fingerprint: str,
        sources: Sequence[str | None] | None = None,
    ) -> int:
        """Add enrollment embeddings (K, D) or (D,) to a speaker, creating the speaker if new.

        Returns the speaker's number of embeddings afterwards. All K are added or none.

        Raises:
            StoreError: another model's fingerprint, a wrong embedding size, NaN/Inf values,
                an empty name or a sources list of the wrong length.
        """

    @abc.abstractmethod
    def remove(self, name: str) -> int:
        """Remove a speaker and all its embeddings; returns how many embeddings went.

        Raises:
            StoreError: no speaker of that name.
        """

    @abc.abstractmethod
    def speakers(self) -> list[SpeakerEntry]:
        """Every enrolled speaker, by name."""

    @abc.abstractmethod
    def embeddings(self, name: str) -> np.ndarray:
        """A speaker's enrollment embeddings as stored, (K, embed_dim) float32."""

    @abc.abstractmethod
    def speaker_means(self) -> tuple[list[str], np.ndarray]:
        """Names and their mean embeddings (N, embed_dim), each the normalised mean of the
        speaker's normalised enrollment embeddings."""

    @abc.abstractmethod
    def identify(
        self,
        embedding: np.ndarray,
        *,
        threshold: float,
        model_fingerprint: str,
        top_k: int = 5,
    ) -> Identification:
        """Score a query embedding (D,) against every speaker's mean (the module docstring);
        the ``top_k`` best come back as candidates.

        Raises:
            StoreError: another model's fingerprint, a wrong embedding size, NaN/Inf in the
                query, or an empty store.
        """
