"""Export to ONNX and TorchScript, with parity checks against eager torch.

>>> from speakerprint.export import export_onnx, export_torchscript, quantize_onnx_int8
>>> export_onnx("runs/x/bundle", "x.onnx", with_features=True)       # doctest: +SKIP
>>> quantize_onnx_int8("x.onnx", "x.int8.onnx")                       # doctest: +SKIP
>>> export_torchscript("runs/x/bundle", "x.pt", with_features=True)   # doctest: +SKIP

Each writes a sidecar JSON beside the model (``x.onnx.json``). An ONNX model with its features
inside runs without torch through :class:`speakerprint.onnx_runtime.OnnxSpeakerEncoder`.
"""

from __future__ import annotations

from speakerprint.export.common import WaveformEncoder
from speakerprint.export.onnx import DEFAULT_OPSET, export_onnx, quantize_onnx_int8
from speakerprint.export.torchscript import export_torchscript
from speakerprint.features.fbank import ExportFbank, dft_basis

__all__ = [
    "DEFAULT_OPSET",
    "ExportFbank",
    "WaveformEncoder",
    "dft_basis",
    "export_onnx",
    "export_torchscript",
    "quantize_onnx_int8",
]
