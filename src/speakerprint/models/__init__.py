"""Speaker encoders and their registry.

>>> from speakerprint.models import create_model, list_models
>>> model = create_model("ecapa_tdnn_c512")
>>> model.embed_dim, model.feat_dim
(192, 80)
"""

from speakerprint.models import ecapa  # noqa: F401  (registers the ECAPA-TDNN factories)
from speakerprint.models.base import EncoderModule
from speakerprint.models.ecapa import EcapaTdnn
from speakerprint.models.registry import (
    count_parameters,
    create_model,
    list_models,
    register_model,
)
from speakerprint.models.utils import lengths_to_mask

__all__ = [
    "EcapaTdnn",
    "EncoderModule",
    "count_parameters",
    "create_model",
    "lengths_to_mask",
    "list_models",
    "register_model",
]
