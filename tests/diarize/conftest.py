"""Fixtures of the diarization tests: the shipped model and conversations of real speech."""

from __future__ import annotations

import pytest

from tests.diarize.conversation import WELL_SEPARATED, build_conversation


@pytest.fixture(scope="session")
def encoder():
    from speakerprint.inference import SpeakerEncoder

    return SpeakerEncoder.from_pretrained()


@pytest.fixture(scope="session")
def speech_root(shared_data):
    return shared_data / "speechocean762" / "train"


@pytest.fixture(scope="session")
def three_speakers(tmp_path_factory, speech_root):
    """(path, true turns) of 3 well separated dev speakers, 3 turns each (about 26 s)."""
    path = tmp_path_factory.mktemp("conversations") / "three.wav"
    return path, build_conversation(speech_root, WELL_SEPARATED, path)
