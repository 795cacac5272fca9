"""Data: utterance manifests (JSONL), trial lists, and preparing a folder of audio into both."""

from __future__ import annotations

from speakerprint.data.manifest import Utterance, read_manifest, speakers, write_manifest
from speakerprint.data.prepare import AUDIO_EXTENSIONS, PreparedFolder, prepare_folder
from speakerprint.data.trials import (
    DEFAULT_TRIALS_PER_UTTERANCE,
    Trial,
    check_trials_against,
    make_trials,
    read_trials,
    write_trials,
)

__all__ = [
    "AUDIO_EXTENSIONS",
    "DEFAULT_TRIALS_PER_UTTERANCE",
    "PreparedFolder",
    "Trial",
    "Utterance",
    "check_trials_against",
    "make_trials",
    "prepare_folder",
    "read_manifest",
    "read_trials",
    "speakers",
    "write_manifest",
    "write_trials",
]
