"""Speaker diarization: who spoke when, from the windowed embeddings of any speaker model.

>>> from speakerprint.diarize import diarize
>>> result = diarize("meeting.wav", num_speakers=None, method="ahc")  # doctest: +SKIP
>>> result.labels()  # doctest: +SKIP
['SPEAKER_00', 'SPEAKER_01']
>>> print(result.to_rttm())  # doctest: +SKIP
"""

from __future__ import annotations

from speakerprint.diarize.cluster import CLUSTER_METHODS, SpeakerBounds, cluster_embeddings
from speakerprint.diarize.pipeline import DEFAULT_THRESHOLD, diarize
from speakerprint.diarize.result import DiarizationResult, SpeakerCluster

__all__ = [
    "CLUSTER_METHODS",
    "DEFAULT_THRESHOLD",
    "DiarizationResult",
    "SpeakerBounds",
    "SpeakerCluster",
    "cluster_embeddings",
    "diarize",
]
