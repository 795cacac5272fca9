"""End to end on real speech: the loss falls and the dev EER beats the untrained model.

22 speakers of speechocean762 (the demo data) to train on, 10 unseen speakers for the dev trials.
"""

import numpy as np

from speakerprint.inference import SpeakerEncoder
from speakerprint.train.loop import train
from tests.conftest import tiny_config


def test_short_cpu_training_learns_speakers(tmp_path, demo_prepared):
    cfg = tiny_config(
        demo_prepared,
        **{
            "model.args": "{channels: 128, mfa_channels: 384}",
            "data.batch_size": 32,
            "data.crop_s": 1.5,
            "train.max_steps": 80,
            "train.checkpoint_every": 1000,
            "train.eval_at_start": "true",
            "optim.lr": 0.003,
            "schedule.warmup_steps": 10,
            "loss.margin_warmup_steps": 40,
        },
    )
    result = train(cfg, tmp_path / "run", progress=False)
    losses = np.array(result.losses)
    print(f"loss first 10: {losses[:10].mean():.3f}, last 10: {losses[-10:].mean():.3f}")
    print(f"dev EER untrained {result.dev_initial['eer']:.3f} -> trained {result.dev_final['eer']:.3f}")
    assert losses[-10:].mean() < 0.8 * losses[:10].mean()
    assert result.dev_final["eer"] < result.dev_initial["eer"] - 0.05

    enc = SpeakerEncoder.from_pretrained(result.bundle_path)
    assert enc.bundle.threshold is not None
    assert abs(enc.bundle.threshold.value - result.dev_final["eer_threshold"]) < 1e-6
