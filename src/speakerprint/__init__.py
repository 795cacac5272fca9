"""speakerprint: speaker recognition in PyTorch.

Train, evaluate and serve speaker-embedding models::

    from speakerprint import SpeakerEncoder
    enc = SpeakerEncoder.from_pretrained()          # the model that ships with the package
    result = enc.verify("a.wav", "b.flac")
    print(result.score, result.same_speaker)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["SpeakerEncoder", "load_audio", "AudioLoadError", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from speakerprint.audio import AudioLoadError, load_audio
    from speakerprint.inference import SpeakerEncoder


def __getattr__(name: str):
    # Lazy, so that `import speakerprint` stays cheap for the CLI and for subpackages.
    if name == "SpeakerEncoder":
        from speakerprint.inference import SpeakerEncoder

        return SpeakerEncoder
    if name in ("load_audio", "AudioLoadError"):
        from speakerprint import audio

        return getattr(audio, name)
    raise AttributeError(f"module 'speakerprint' has no attribute {name!r}")
