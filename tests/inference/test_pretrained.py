"""The model that ships with the package: it loads by default and separates unseen speakers.

The shipped bundle was trained on 100 speechocean762 speakers; prepare_folder with the same seed
gives the 25 it never saw, and a few of them are scored here.
"""

import itertools

import numpy as np
import pytest

from speakerprint.data.manifest import read_manifest
from speakerprint.data.prepare import prepare_folder
from speakerprint.data.trials import Trial
from speakerprint.eval.metrics import compute_eer
from speakerprint.eval.scoring import cosine_scores, embed_utterances
from speakerprint.inference import SpeakerEncoder, default_model_path

pytestmark = pytest.mark.skipif(
    not default_model_path().is_dir(), reason="the default model is not installed"
)


def test_default_model_describes_itself():
    enc = SpeakerEncoder.from_pretrained()
    assert enc.sample_rate == 16000 and enc.embed_dim == 192
    assert enc.bundle.threshold is not None
    assert "speechocean762" in enc.bundle.info["description"]
    assert enc.bundle.info["num_speakers"] == 100


def test_default_model_separates_unseen_speakers(tmp_path, shared_data):
    prepared = prepare_folder(
        shared_data / "speechocean762" / "train", tmp_path, dev_speakers=25, seed=0
    )
    train_speakers = {u.speaker for u in read_manifest(prepared.train_manifest)}
    dev = read_manifest(prepared.dev_manifest)
    assert not train_speakers & {u.speaker for u in dev}
    # 8 unseen speakers x 4 utterances, every pair.
    chosen = []
    for speaker in sorted({u.speaker for u in dev})[:8]:
        chosen += [u for u in dev if u.speaker == speaker][:4]
    enc = SpeakerEncoder.from_pretrained()
    embeddings = embed_utterances(enc.bundle, chosen, batch_size=8)
    trials = [
        Trial(int(a.speaker == b.speaker), a.utt_id, b.utt_id)
        for a, b in itertools.combinations(chosen, 2)
    ]
    scores = cosine_scores(embeddings, trials)
    labels = np.array([t.label for t in trials])
    eer = compute_eer(scores, labels).eer
    print(f"EER on {len(trials)} trials of 8 unseen speakers: {100 * eer:.1f}%")
    assert eer < 0.15
    assert scores[labels == 1].mean() > scores[labels == 0].mean() + 0.2
