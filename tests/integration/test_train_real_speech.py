"""End to end on real speech: the loss falls and the dev EER beats the untrained model.

100 speakers of speechocean762 (../shared/data) to train on, 25 unseen speakers for the dev trials
(10,400 trials), a small ECAPA-TDNN (C=128) for 150 steps on the CPU (about 80 s on 2 cores;
measured there: EER 18.8% untrained, 6.9% trained).
"""

import numpy as np
import pytest

from speakerprint.data.prepare import prepare_folder
from speakerprint.inference import SpeakerEncoder
from speakerprint.train.loop import train
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def so762_prepared(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("so762")
    prepare_folder(shared_data / "speechocean762" / "train", out, dev_speakers=25, seed=0)
    return out


def test_short_cpu_training_learns_speakers(tmp_path, so762_prepared):
    cfg = tiny_config(
        so762_prepared,
        **{
            "model.args": "{channels: 128, mfa_channels: 384, embed_dim: 128}",
            "data.batch_size": 32,
            "data.crop_s": 2.0,
            "train.max_steps": 150,
            "train.checkpoint_every": 1000,
            "train.eval_at_start": "true",
            "optim.lr": 0.005,
            "schedule.warmup_steps": 10,
            "loss.margin_warmup_steps": 50,
            "data.num_workers": 1,
        },
    )
    result = train(cfg, tmp_path / "run", progress=False)
    losses = np.array(result.losses)
    before, after = result.dev_initial["eer"], result.dev_final["eer"]
    print(f"loss first 10 steps {losses[:10].mean():.3f}, last 10 {losses[-10:].mean():.3f}")
    print(f"dev EER untrained {100 * before:.2f}% -> trained {100 * after:.2f}%")
    assert losses[-10:].mean() < 0.8 * losses[:10].mean()
    assert after < before - 0.05

    enc = SpeakerEncoder.from_pretrained(result.bundle_path)
    assert enc.bundle.threshold is not None
    assert enc.bundle.threshold.value == pytest.approx(result.dev_final["eer_threshold"])
