"""Export tests: one intra-op thread (tiny tensors on a busy CPU), and a small bundle on disk."""

from __future__ import annotations

import pytest
import torch

from speakerprint.features import FbankConfig
from speakerprint.models import create_model
from speakerprint.models.bundle import Threshold, save_bundle


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory):
    """A small ECAPA-TDNN with random weights and non-trivial BatchNorm statistics, as a bundle
    with a threshold: exports in well under a second."""
    torch.manual_seed(0)
    model = create_model(
        "ecapa_tdnn",
        channels=32,
        mfa_channels=96,
        embed_dim=16,
        se_channels=8,
        attention_channels=8,
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.5, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
    path = tmp_path_factory.mktemp("small_bundle") / "bundle"
    return save_bundle(
        path,
        model.eval(),
        FbankConfig(),
        threshold=Threshold(value=0.25, method="eer", measured_on="nothing (a test bundle)"),
    )
