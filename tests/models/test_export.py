"""TorchScript export through :func:`speakerprint.models.script_encoder`.

Every family's scripted output is held to its eager one in test_encoders.py; here is the helper.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import Tensor

from speakerprint.models import EncoderModule, create_model, script_encoder

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


def test_script_encoder_compiles_an_eval_copy():
    # The x-vector TDNN: the family that compiles and optimises fastest.
    torch.manual_seed(0)
    model = create_model("xvector", channels=8, stats_channels=8, embed_dim=4).train()
    scripted = script_encoder(model)
    assert isinstance(scripted, torch.jit.ScriptModule)
    assert not scripted.training and model.training  # a copy was put in eval mode
    model.eval()
    # Three calls under the default (profiling, optimising) executor, the shapes changing.
    with torch.no_grad():
        for frames, lengths in [(20, [20, 9]), (33, [33, 5, 12]), (20, [20, 9])]:
            feats = torch.randn(len(lengths), frames, model.feat_dim)
            expected = model(feats, torch.tensor(lengths))
            torch.testing.assert_close(scripted(feats, torch.tensor(lengths)), expected)
    # A copy: its weights are not the model's.
    assert scripted.embedding.weight.data_ptr() != model.embedding.weight.data_ptr()


class _PythonOnlyEncoder(EncoderModule):
    family: ClassVar[str] = "python_only_family"

    def __init__(self) -> None:
        super().__init__()
        self.feat_dim, self.embed_dim, self.min_frames = 2, 2, 1
        self._hparams = {}

    def forward(self, feats: Tensor, lengths: Tensor | None = None) -> Tensor:
        return feats.numpy().mean(axis=1)  # NumPy: TorchScript cannot compile it


def test_script_encoder_names_the_family_that_fails():
    with pytest.raises(RuntimeError, match="'python_only_family' \\(_PythonOnlyEncoder\\)"):
        script_encoder(_PythonOnlyEncoder())


def test_script_encoder_rejects_other_modules():
    with pytest.raises(TypeError, match="EncoderModule"):
        script_encoder(torch.nn.Linear(2, 2))
