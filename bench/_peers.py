"""Importing the peers' packages for benchmarks only (speakerprint itself never imports them).

- speechbrain imports torchaudio at module level (``speechbrain.nnet.CNN``, used only by
  ``GaborConv1d._mel_filters``; ``speechbrain.utils.torch_audio_backend`` reads its version). When
  torchaudio is not installed (it has no CPU build for this torch), a stub module goes into
  ``sys.modules`` first: it has only ``__version__`` and raises ``AttributeError`` on any other
  attribute, so a code path that used torchaudio fails loudly rather than being timed wrongly.
  Where torchaudio is installed (the GPU machines), the real one is imported.
- ``wespeaker/__init__.py`` imports its CLI (torchaudio, silero-vad, s3prl, whisper, ...): the
  package is registered as a bare namespace with its install path, so only ``wespeaker.models.*``
  (which import torch alone) are loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


class _TorchaudioStub(types.ModuleType):
    """Stands in for an absent torchaudio: any use other than reading the version fails."""

    __version__ = "2.9.0+stub"

    def __getattr__(self, name: str):
        raise AttributeError(f"torchaudio stub (bench only): torchaudio.{name} is not available")


def import_speechbrain():
    """``(version, Fbank, InputNormalization, ECAPA_TDNN)`` from speechbrain."""
    if "torchaudio" not in sys.modules and importlib.util.find_spec("torchaudio") is None:
        sys.modules["torchaudio"] = _TorchaudioStub("torchaudio")
    try:
        import speechbrain
    except ImportError as e:
        raise SystemExit(f"speechbrain is not importable ({e}); see bench/README.md") from e
    from speechbrain.lobes.features import Fbank as SBFbank
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    from speechbrain.processing.features import InputNormalization

    return speechbrain.__version__, SBFbank, InputNormalization, ECAPA_TDNN


def import_wespeaker_models(module: str):
    """``wespeaker.models.<module>`` without running ``wespeaker/__init__.py``."""
    if "wespeaker" not in sys.modules:
        spec = importlib.util.find_spec("wespeaker")
        if spec is None:
            raise SystemExit("wespeaker is not installed; see bench/README.md")
        package = types.ModuleType("wespeaker")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["wespeaker"] = package
    return importlib.import_module(f"wespeaker.models.{module}")
