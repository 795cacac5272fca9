"""Resemblyzer's voice encoder converted from the weights in its wheel gives Resemblyzer's own
embeddings (``VoiceEncoder().embed_utterance(preprocess_wav(path))``) on real speech, and the same
EER on a speechocean762 trial list.

The reference is the installed Resemblyzer package itself (requirements-peers.txt): its
``preprocess_wav`` (librosa decoding, volume normalisation, webrtcvad trimming), librosa's mel
spectrogram and its ``VoiceEncoder``. Ours goes through the bundle written by the converter and
:class:`SpeakerEncoder`, batched with padding.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from speakerprint.audio import load_audio
from speakerprint.cli.main import app
from speakerprint.convert import convert, recognise
from speakerprint.convert.resemblyzer import installed_checkpoint
from speakerprint.errors import BundleError
from speakerprint.eval.metrics import compute_eer
from speakerprint.features import frontend_from_dict
from speakerprint.features.resemblyzer import ResemblyzerMel, ResemblyzerMelConfig
from speakerprint.inference.encoder import SpeakerEncoder
from speakerprint.models import count_parameters, create_model

with warnings.catch_warnings():  # Resemblyzer imports scipy.ndimage.morphology (deprecated)
    warnings.simplefilter("ignore", DeprecationWarning)
    import resemblyzer
    from resemblyzer import VoiceEncoder, preprocess_wav, wav_to_mel_spectrogram

NUM_SPEAKERS, PER_SPEAKER = 8, 4
BOUND = 0.9999


def _recordings(shared_data: Path) -> list[tuple[str, Path]]:
    speakers = sorted((shared_data / "speechocean762" / "train").iterdir())[:NUM_SPEAKERS]
    return [
        (speaker.name, path)
        for speaker in speakers
        for path in sorted(speaker.glob("*.opus"))[:PER_SPEAKER]
    ]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _ours(bundle: Path, waves: list[np.ndarray]) -> np.ndarray:
    """Unit embeddings through the bundle, all in one zero-padded batch."""
    return _unit(SpeakerEncoder.from_pretrained(bundle).embed_batch(waves))


def _eer_percent(embeddings: np.ndarray, speakers: list[str]) -> float:
    pairs = list(itertools.combinations(range(len(speakers)), 2))
    scores = np.array([embeddings[i] @ embeddings[j] for i, j in pairs])
    labels = np.array([speakers[i] == speakers[j] for i, j in pairs])
    return 100 * compute_eer(scores, labels).eer


@pytest.fixture(scope="module")
def reference(shared_data):
    """Speakers, our decoded waveforms and Resemblyzer's embeddings of 8 x 4 recordings."""
    recordings = _recordings(shared_data)
    encoder = VoiceEncoder("cpu", verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa's audioread fallback warnings
        embeddings = np.stack([encoder.embed_utterance(preprocess_wav(p)) for _, p in recordings])
    waves = [load_audio(path, 16000) for _, path in recordings]
    return [s for s, _ in recordings], waves, embeddings


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return convert("resemblyzer", installed_checkpoint(), tmp_path_factory.mktemp("rz") / "b")


def test_embeddings_equal_resemblyzers_and_so_does_the_eer(bundle, reference):
    speakers, waves, expected = reference
    ours = _ours(bundle, waves)
    cosines = np.sum(ours * expected, axis=1)
    # Measured: min cosine 0.9999999, max abs difference 2.5e-7 over the 32 recordings.
    assert cosines.min() >= BOUND, cosines
    assert np.abs(ours - expected).max() < 1e-4
    # Measured: EER 15.18 % both ways (48 target, 448 non-target trials).
    assert abs(_eer_percent(ours, speakers) - _eer_percent(expected, speakers)) <= 0.05


def test_the_installed_package_folder_is_recognised_and_converts(tmp_path, reference):
    package = Path(resemblyzer.__file__).parent
    source, checkpoint, config = recognise(package)
    assert (source, checkpoint.name, config) == ("resemblyzer", "pretrained.pt", None)
    result = CliRunner().invoke(app, ["convert", source, str(package), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    _, waves, expected = reference
    assert np.sum(_ours(tmp_path, waves[:2]) * expected[:2], axis=1).min() >= BOUND


def test_a_wrong_mapping_or_missing_preprocessing_fails_the_bound(tmp_path, reference):
    _, waves, expected = reference
    checkpoint = torch.load(installed_checkpoint(), map_location="cpu", weights_only=True)
    state = checkpoint["model_state"]
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):  # LSTM layers 1 and 2 swapped
        state[f"lstm.{name}_l1"], state[f"lstm.{name}_l2"] = (
            state[f"lstm.{name}_l2"],
            state[f"lstm.{name}_l1"],
        )
    (tmp_path / "swapped").mkdir()
    torch.save(checkpoint, tmp_path / "swapped" / "pretrained.pt")
    swapped = convert("resemblyzer", tmp_path / "swapped", tmp_path / "swapped_bundle")
    assert np.sum(_ours(swapped, waves[:4]) * expected[:4], axis=1).min() < BOUND

    right = SpeakerEncoder.from_pretrained(
        convert("resemblyzer", installed_checkpoint(), tmp_path / "b")
    )
    right.bundle.fbank = ResemblyzerMel(ResemblyzerMelConfig(trim_silences=False))
    untrimmed = _unit(right.embed_batch(waves[:4]))
    assert np.sum(untrimmed * expected[:4], axis=1).min() < BOUND


def test_features_equal_librosas_after_resemblyzers_preprocessing(reference):
    _, waves, _ = reference
    features = frontend_from_dict(ResemblyzerMelConfig().to_dict())
    assert isinstance(features, ResemblyzerMel)
    batch = torch.nn.utils.rnn.pad_sequence(
        [torch.from_numpy(w) for w in waves[:3]], batch_first=True
    )
    feats, frames = features(batch, torch.tensor([len(w) for w in waves[:3]]))
    for row, wav in enumerate(waves[:3]):
        prepared = preprocess_wav(wav)  # Resemblyzer's volume normalisation and trimming
        expected = wav_to_mel_spectrogram(prepared)  # (len // 160 + 1, 40)
        assert int(frames[row]) == len(prepared) // 160 + 3  # two tail frames
        ours = feats[row, : len(expected)].numpy()
        assert np.abs(ours - expected).max() <= 1e-5 * expected.max()
        assert not feats[row, int(frames[row]) :].any()


@pytest.mark.parametrize("num_samples", [*range(0, 80_000, 1_237), 25_599, 25_600, 37_919, 37_920])
def test_window_count_is_resemblyzers(num_samples):
    encoder = create_model("ge2e_lstm")
    frames = ResemblyzerMel().num_frames(torch.tensor([num_samples]))
    _, mel_slices = VoiceEncoder.compute_partial_slices(num_samples, rate=1.3, min_coverage=0.75)
    assert int(encoder.num_windows(frames)) == len(mel_slices)


def test_parameter_count_is_the_checkpoints():
    state = torch.load(installed_checkpoint(), map_location="cpu", weights_only=True)["model_state"]
    published = sum(v.numel() for k, v in state.items() if not k.startswith("similarity_"))
    with torch.device("meta"):
        assert count_parameters(create_model("ge2e_lstm")) == published == 1_423_616


def test_problems_are_named(tmp_path):
    with pytest.raises(BundleError, match="without a config file"):
        convert("resemblyzer", installed_checkpoint(), tmp_path / "b", config=tmp_path / "c.yaml")
    checkpoint = torch.load(installed_checkpoint(), map_location="cpu", weights_only=True)
    del checkpoint["model_state"]["lstm.bias_hh_l2"]
    torch.save(checkpoint, tmp_path / "pretrained.pt")
    with pytest.raises(BundleError, match="lstm.bias_hh_l2"):
        convert("resemblyzer", tmp_path / "pretrained.pt", tmp_path / "b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no Resemblyzer checkpoint"):
        convert("resemblyzer", tmp_path / "empty", tmp_path / "b")
