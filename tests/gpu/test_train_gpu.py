"""Training on CUDA under autocast. Marked `gpu`; skipped where no CUDA device exists (CI)."""

import numpy as np
import pytest
import torch

from speakerprint.train.loop import train
from tests.conftest import tiny_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_training_steps_on_cuda(tmp_path, demo_prepared, precision):
    cfg = tiny_config(
        demo_prepared,
        **{
            "train.device": "cuda",
            "train.precision": precision,
            "train.max_steps": 20,
            "data.batch_size": 32,
            "train.checkpoint_every": 10,
        },
    )
    result = train(cfg, tmp_path / precision, progress=False)
    losses = np.array(result.losses)
    assert np.isfinite(losses).all()
    assert losses[-5:].mean() < losses[:5].mean()
    resumed = train(cfg, tmp_path / precision, resume=True, progress=False)
    assert resumed.start_step == 20 and resumed.losses == []
