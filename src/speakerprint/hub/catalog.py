"""The public speaker models speakerprint loads by name, each pinned to a revision and the sha256
of every file it needs.

A name is an alias (``wespeaker-resnet34``) or the hub id exactly as users copy it
(``pyannote/wespeaker-voxceleb-resnet34-LM``); both are matched without regard to case. Every fact
in an entry (parameters, training data, published EER, licence) names its source, and
``speakerprint models`` prints them.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

__all__ = ["CATALOG", "DEFAULT_ALIAS", "HubFile", "PretrainedModel", "find_model", "suggest"]

DEFAULT_ALIAS = "speakerprint-ecapa-so762"


@dataclass(frozen=True)
class HubFile:
    """One file of a hub repository at the entry's revision.

    Attributes:
        name: path inside the repository.
        sha256: hex digest of its content; a download that does not hash to it is deleted.
            ``None`` where no published digest was found: the model is then not downloaded
            (see :attr:`PretrainedModel.pinned`), only named, with where to get it.
        size: bytes, for the error that tells a user what to fetch by hand (``None``: unknown).
    """

    name: str
    sha256: str | None
    size: int | None = None


@dataclass(frozen=True)
class PretrainedModel:
    """A public model, where its files are and what it is.

    Attributes:
        alias: the short name (``wespeaker-resnet34``).
        hub_id: ``owner/name`` on the Hugging Face hub, or ``""`` for a model that ships in a
            package (``package`` says which).
        revision: the hub commit the files are pinned to.
        files: every file the conversion reads; the first is the checkpoint.
        source: the converter (``speakerprint.convert`` source) that reads them.
        config: the file among ``files`` that the converter reads as the config, if separate.
        package: for a model that ships inside a pip package: ``(distribution, file in it)``.
        aliases: further names (the ModelScope id of a mirrored model, older names).
        architecture, parameters, embed_dim, sample_rate, features, training_data: what it is.
        published: the published result (EER and the trial list), ``source``: where it is
            published; ``licence``: the model's licence as its card states it.
    """

    alias: str
    hub_id: str
    revision: str
    files: tuple[HubFile, ...]
    source: str
    architecture: str
    parameters: int
    embed_dim: int
    sample_rate: int
    features: str
    training_data: str
    published: str
    published_source: str
    licence: str
    config: str | None = None
    package: tuple[str, str] | None = None
    aliases: tuple[str, ...] = field(default=())
    download_page: str = ""

    @property
    def pinned(self) -> bool:
        """Whether every file has a known sha256 at a fixed revision, so it may be downloaded."""
        fixed = self.package is not None or re.fullmatch(r"[0-9a-f]{40}", self.revision)
        return bool(fixed) and all(f.sha256 for f in self.files)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n in (self.alias, self.hub_id, *self.aliases) if n)

    @property
    def checkpoint(self) -> str:
        return self.files[0].name


_VOXCELEB2 = "VoxCeleb2 dev (5,994 speakers)"
_VOXCELEB12 = "VoxCeleb1 + VoxCeleb2"
_WESPEAKER_FBANK = "80 log-mel (Kaldi, Hamming, int16 scale), mean-normalised"
_3DSPEAKER_FBANK = "80 log-mel (Kaldi, povey, waveform in [-1, 1]), mean-normalised"
_WESPEAKER_README = "wenet-e2e/wespeaker examples/voxceleb/v2/README.md"
_MODELSCOPE = "https://modelscope.cn/models/{}/files"

CATALOG: tuple[PretrainedModel, ...] = (
    PretrainedModel(
        alias="wespeaker-resnet34",
        hub_id="pyannote/wespeaker-voxceleb-resnet34-LM",
        revision="71cf1fe376de0c63e8d81377e2d94968c36f1691",
        files=(
            HubFile(
                "pytorch_model.bin",
                "366edf44f4c80889a3eb7a9d7bdf02c4aede3127f7dd15e274dcdb826b143c56",
            ),
        ),
        source="pyannote",
        architecture="ResNet34, TSTP pooling (WeSpeaker, as packaged by pyannote 3.x)",
        parameters=6_630_000,
        embed_dim=256,
        sample_rate=16000,
        features=_WESPEAKER_FBANK,
        training_data=_VOXCELEB2,
        published="VoxCeleb1-O (cleaned) EER 0.797%, 0.723% with AS-norm",
        published_source=_WESPEAKER_README,
        licence="CC-BY-4.0",
        aliases=("pyannote-resnet34",),
    ),
    PretrainedModel(
        alias="titanet-large",
        hub_id="nvidia/speakerverification_en_titanet_large",
        revision="0dc382f40121a5fbd34db10a2bb04d826c2be6a8",
        files=(
            HubFile(
                "speakerverification_en_titanet_large.nemo",
                "e838520693f269e7984f55bc8eb3c2d60ccf246bf4b896d4be9bcabe3e4b0fe3",
                101_621_760,
            ),
        ),
        source="nemo",
        architecture="TitaNet-L (NeMo)",
        # The encoder, counted; the published 25.3M (paper, NGC card) includes the training
        # head of 16,681 speakers x 192 (3,202,752), which the conversion drops.
        parameters=22_122_288,
        embed_dim=192,
        sample_rate=16000,
        features="80 log-mel (NeMo featurizer)",
        training_data="VoxCeleb1+2, Fisher, Switchboard, LibriSpeech, SRE 2004-2010",
        published="VoxCeleb1-O (cleaned) EER 0.66%",
        published_source="huggingface.co/nvidia/speakerverification_en_titanet_large",
        licence="CC-BY-4.0",
    ),
    PretrainedModel(
        alias="ecapa-voxceleb",
        hub_id="speechbrain/spkrec-ecapa-voxceleb",
        revision="eac27266f68caa806381260bd44ace38b136c76a",
        files=(
            HubFile(
                "embedding_model.ckpt",
                "0575cb64845e6b9a10db9bcb74d5ac32b326b8dc90352671d345e2ee3d0126a2",
                83_316_686,
            ),
        ),
        source="speechbrain",
        architecture="ECAPA-TDNN C=1024 (SpeechBrain)",
        parameters=20_767_552,
        embed_dim=192,
        sample_rate=16000,
        features="80 log-mel (SpeechBrain Fbank), sentence mean-normalised",
        training_data=_VOXCELEB12,
        published="VoxCeleb1-O (cleaned) EER 0.80%",
        published_source="huggingface.co/speechbrain/spkrec-ecapa-voxceleb",
        licence="Apache-2.0",
    ),
    PretrainedModel(
        alias="xvector-voxceleb",
        hub_id="speechbrain/spkrec-xvect-voxceleb",
        revision="f403b5f015e450aa6de67cae9b6fe564906943e2",
        files=(
            HubFile(
                "embedding_model.ckpt",
                "9d96cafa0ede1a84799b67dc9b5645f31f5b7d094e7e4775e5d5c12547883a93",
            ),
        ),
        source="speechbrain",
        architecture="x-vector TDNN (SpeechBrain), 24 mel bins",
        parameters=4_211_604,
        embed_dim=512,
        sample_rate=16000,
        features="24 log-mel (SpeechBrain Fbank), sentence mean-normalised",
        training_data=_VOXCELEB12,
        published="VoxCeleb1-O EER 3.2% (with PLDA)",
        published_source="huggingface.co/speechbrain/spkrec-xvect-voxceleb",
        licence="Apache-2.0",
    ),
    PretrainedModel(
        alias="resemblyzer",
        hub_id="",
        revision="0.1.4",
        files=(
            HubFile(
                "pretrained.pt",
                "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
                17_090_379,
            ),
        ),
        source="resemblyzer",
        package=("Resemblyzer", "resemblyzer"),
        architecture="GE2E 3-layer LSTM (Resemblyzer)",
        parameters=1_423_616,  # 3-layer LSTM 40->256 and Linear 256->256, counted
        embed_dim=256,
        sample_rate=16000,
        features="40 mel power (librosa), VAD-trimmed",
        training_data="not stated by Resemblyzer",
        published="not published",
        published_source="resemble-ai/Resemblyzer",
        licence="Apache-2.0",
    ),
    PretrainedModel(
        alias="campplus-zh",
        hub_id="iic/speech_campplus_sv_zh-cn_16k-common",
        revision="v1.0.0",
        files=(HubFile("campplus_cn_common.bin", None), HubFile("configuration.json", None)),
        source="speakerlab",
        architecture="CAM++ (3D-Speaker)",
        parameters=6_848_544,  # counted: 3D-Speaker's 7.18M is CAM++ at 512-d, this one is 192-d
        embed_dim=192,
        sample_rate=16000,
        features=_3DSPEAKER_FBANK,
        training_data="200k labelled Mandarin speakers (3D-Speaker)",
        published="CN-Celeb test EER 4.32%",
        published_source="developer.aliyun.com/article/1210240",
        licence="Apache-2.0",
        download_page=_MODELSCOPE.format("iic/speech_campplus_sv_zh-cn_16k-common"),
    ),
    PretrainedModel(
        alias="campplus-voxceleb",
        hub_id="iic/speech_campplus_sv_en_voxceleb_16k",
        revision="v1.0.2",
        files=(HubFile("campplus_voxceleb.bin", None), HubFile("configuration.json", None)),
        source="speakerlab",
        architecture="CAM++ (3D-Speaker)",
        parameters=7_180_000,
        embed_dim=512,
        sample_rate=16000,
        features=_3DSPEAKER_FBANK,
        training_data=_VOXCELEB2,
        published="VoxCeleb1-O EER 0.73% (0.65% large-margin fine-tuned)",
        published_source="modelscope/3D-Speaker egs/voxceleb/sv-cam++/README.md",
        licence="Apache-2.0",
        download_page=_MODELSCOPE.format("iic/speech_campplus_sv_en_voxceleb_16k"),
    ),
    PretrainedModel(
        alias="eres2netv2-zh",
        hub_id="iic/speech_eres2netv2_sv_zh-cn_16k-common",
        revision="v1.0.1",
        files=(HubFile("pretrained_eres2netv2.ckpt", None), HubFile("configuration.json", None)),
        source="speakerlab",
        architecture="ERes2NetV2 (3D-Speaker)",
        parameters=17_859_632,
        embed_dim=192,
        sample_rate=16000,
        features=_3DSPEAKER_FBANK,
        training_data="200k labelled Mandarin speakers (3D-Speaker)",
        published="not published for this checkpoint",
        published_source="modelscope/3D-Speaker README",
        licence="Apache-2.0",
        download_page=_MODELSCOPE.format("iic/speech_eres2netv2_sv_zh-cn_16k-common"),
    ),
    PretrainedModel(
        alias="eres2net-voxceleb",
        hub_id="iic/speech_eres2net_sv_en_voxceleb_16k",
        revision="v1.0.2",
        files=(HubFile("pretrained_eres2net.ckpt", None), HubFile("configuration.json", None)),
        source="speakerlab",
        architecture="ERes2Net-base (3D-Speaker)",
        parameters=6_610_688,
        embed_dim=192,
        sample_rate=16000,
        features=_3DSPEAKER_FBANK,
        training_data=_VOXCELEB2,
        published="VoxCeleb1-O EER 0.97% (0.84% large-margin fine-tuned)",
        published_source="modelscope/3D-Speaker egs/voxceleb/sv-eres2net/README.md",
        licence="Apache-2.0",
        download_page=_MODELSCOPE.format("iic/speech_eres2net_sv_en_voxceleb_16k"),
    ),
    PretrainedModel(
        alias="resnet293-voxceleb",
        hub_id="Wespeaker/wespeaker-voxceleb-resnet293-LM",
        revision="4d9c92996f3c2567b2d07ec77feb7c59652a2c66",
        files=(HubFile("avg_model.pt", None), HubFile("config.yaml", None)),
        source="wespeaker",
        config="config.yaml",
        architecture="ResNet293, TSTP pooling (WeSpeaker)",
        parameters=28_620_000,
        embed_dim=256,
        sample_rate=16000,
        features=_WESPEAKER_FBANK,
        training_data=_VOXCELEB2,
        published="VoxCeleb1-O (cleaned) EER 0.532%, 0.447% with AS-norm",
        published_source=_WESPEAKER_README,
        licence="CC-BY-4.0",
        download_page="https://huggingface.co/Wespeaker/wespeaker-voxceleb-resnet293-LM",
    ),
    PretrainedModel(
        alias="resnet221-voxceleb",
        hub_id="Wespeaker/wespeaker-voxceleb-resnet221-LM",
        revision="8ea92abc94e8426f0663fadf45a8eeb8133324c4",
        files=(
            HubFile("voxceleb_resnet221_LM.pt", None),
            HubFile("voxceleb_resnet221_LM.yaml", None),
        ),
        source="wespeaker",
        config="voxceleb_resnet221_LM.yaml",
        architecture="ResNet221, TSTP pooling (WeSpeaker)",
        parameters=23_790_000,
        embed_dim=256,
        sample_rate=16000,
        features=_WESPEAKER_FBANK,
        training_data=_VOXCELEB2,
        published="VoxCeleb1-O (cleaned) EER 0.580%, 0.505% with AS-norm",
        published_source=_WESPEAKER_README,
        licence="CC-BY-4.0",
        download_page="https://huggingface.co/Wespeaker/wespeaker-voxceleb-resnet221-LM",
    ),
    PretrainedModel(
        alias="wespeaker-cnceleb-resnet34",
        hub_id="Wespeaker/wespeaker-cnceleb-resnet34-LM",
        revision="7d2f308bf48712e2e76bef1e88139381a9b26ed4",
        files=(HubFile("model_5.pt", None), HubFile("config.yaml", None)),
        source="wespeaker",
        config="config.yaml",
        architecture="ResNet34, TSTP pooling (WeSpeaker)",
        parameters=6_630_000,
        embed_dim=256,
        sample_rate=16000,
        features=_WESPEAKER_FBANK,
        training_data="CN-Celeb",
        published="CN-Celeb eval EER 6.652%",
        published_source="wenet-e2e/wespeaker examples/cnceleb/v2/README.md",
        licence="Apache-2.0",
        download_page="https://huggingface.co/Wespeaker/wespeaker-cnceleb-resnet34-LM",
    ),
)


def find_model(
    name: str, catalog: tuple[PretrainedModel, ...] | None = None
) -> PretrainedModel | None:
    """The entry whose alias or hub id is ``name`` (any case), or ``None``."""
    wanted = name.strip().lower()
    for entry in CATALOG if catalog is None else catalog:
        if wanted in (n.lower() for n in entry.names):
            return entry
    return None


def suggest(name: str, catalog: tuple[PretrainedModel, ...] | None = None) -> str:
    """`` (did you mean 'x'?)`` for a near miss, else ``""``."""
    names = [n for entry in (CATALOG if catalog is None else catalog) for n in entry.names]
    close = difflib.get_close_matches(name, [*names, DEFAULT_ALIAS], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
