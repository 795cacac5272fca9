"""Preparers for public corpora, each reading the corpus in its published layout.

Every preparer writes JSONL manifests (see :mod:`speakerprint.data.manifest`), the corpus's
official trial lists where it has them (in the ``LABEL ENROL TEST`` format, named by the
manifests' utt ids) and ``skipped.tsv`` (``path<TAB>reason`` for every file left out: unreadable
audio, names out of the layout), and returns a :class:`PreparedCorpus`. Durations and sample
rates come from the file headers (:func:`~speakerprint.audio.audio_info`). With ``vad``, training
manifests are split into speech segments (entries with ``offset_s``); evaluation manifests stay
whole files, as trial lists name them.

=============  =================================================================
voxceleb1      ``train``, ``test``, ``all``; vox1_O/E/H (and cleaned) trial lists
voxceleb2      ``train`` (dev/aac), ``test`` (test/aac); M4A read directly
librispeech    one manifest per subset; gender from SPEAKERS.TXT
vctk           ``all``; 0.80 and 0.92 (mic1, mic2 or both); gender
cnceleb        ``train`` (CN-Celeb1 dev + CN-Celeb2), ``eval``; cnceleb1_eval trials
kaldi          ``<name>`` from wav.scp, utt2spk, segments, spk2gender; trials
=============  =================================================================

>>> from speakerprint.data.corpora import prepare_voxceleb1
>>> r = prepare_voxceleb1("/data/vox1", "runs/vox1/data", trials_dir="/data/vox1")  # doctest: +SKIP
>>> print(r.summary())  # doctest: +SKIP
"""

from __future__ import annotations

from speakerprint.data.corpora._common import PreparedCorpus
from speakerprint.data.corpora.cnceleb import prepare_cnceleb
from speakerprint.data.corpora.kaldi import prepare_kaldi
from speakerprint.data.corpora.librispeech import (
    LIBRISPEECH_SUBSETS,
    prepare_librispeech,
    read_librispeech_speakers,
)
from speakerprint.data.corpora.vctk import VCTK_MICS, prepare_vctk, read_vctk_speakers
from speakerprint.data.corpora.voxceleb import (
    VOX1_O_SPEAKERS,
    VOX1_TRIAL_LISTS,
    prepare_voxceleb1,
    prepare_voxceleb2,
)

__all__ = [
    "LIBRISPEECH_SUBSETS",
    "VCTK_MICS",
    "VOX1_O_SPEAKERS",
    "VOX1_TRIAL_LISTS",
    "PreparedCorpus",
    "prepare_cnceleb",
    "prepare_kaldi",
    "prepare_librispeech",
    "prepare_vctk",
    "prepare_voxceleb1",
    "prepare_voxceleb2",
    "read_librispeech_speakers",
    "read_vctk_speakers",
]
