"""Speaker encoders and their registry.

>>> from speakerprint.models import create_model, list_models
>>> model = create_model("ecapa_tdnn_c512")
>>> model.embed_dim, model.feat_dim
(192, 80)
"""

# Importing a family's module registers its factories.
from speakerprint.models import (  # noqa: F401
    deep_speaker,
    ecapa,
    eres2net,
    lstm,
    resnet,
    tdnn,
    titanet,
)
from speakerprint.models.base import EncoderModule
from speakerprint.models.deep_speaker import DeepSpeakerResCnn
from speakerprint.models.ecapa import EcapaTdnn
from speakerprint.models.eres2net import ERes2Net
from speakerprint.models.export import script_encoder
from speakerprint.models.lstm import LstmDvector
from speakerprint.models.registry import (
    count_parameters,
    create_model,
    list_models,
    register_model,
)
from speakerprint.models.resnet import ResNet
from speakerprint.models.tdnn import XVectorTdnn
from speakerprint.models.titanet import TitaNet
from speakerprint.models.utils import lengths_to_mask

__all__ = [
    "DeepSpeakerResCnn",
    "ERes2Net",
    "EcapaTdnn",
    "EncoderModule",
    "LstmDvector",
    "ResNet",
    "TitaNet",
    "XVectorTdnn",
    "count_parameters",
    "create_model",
    "lengths_to_mask",
    "list_models",
    "register_model",
    "script_encoder",
]
