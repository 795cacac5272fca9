"""CPU embedding time of each converted family against the original toolkit's own code, and of
their ONNX exports against the PyTorch path (issue 23, item 7).

For each family the peer model is built with the peer's own code at its published size, with random
weights and perturbed BatchNorm statistics (speed does not depend on the values), saved in the
layout the peer publishes, and converted with ``speakerprint.convert`` as the parity tests in
tests/convert do (their helpers are imported from there). Resemblyzer uses the real weights of its
wheel. TitaNet (NeMo) has no installed original and is not timed.

Per family and length, on the same real speech (speechocean762, 16 kHz):

- peer: the peer's front end + model forward, as its inference code does it. WeSpeaker, pyannote
  and 3D-Speaker compute ``torchaudio.compliance.kaldi.fbank``; torchaudio is not installed, so
  their features are kaldi-native-fbank with the same options (tests/convert/peers.py), then the
  utterance mean subtracted in torch. SpeechBrain: its own ``Fbank`` + ``InputNormalization`` +
  ``embedding_model`` (``EncoderClassifier.encode_batch``). Resemblyzer: ``preprocess_wav`` +
  ``VoiceEncoder.embed_utterance``.
- ours: ``load_bundle(folder).embed_batch(wav[None])`` (features included).
- onnx: ``export_onnx(bundle, path, with_features=True)`` run by onnxruntime; for front ends the
  graph cannot hold (SpeechBrain's Fbank) ``with_features=False``, fed by our torch fbank and
  timed together with it. The LSTM d-vector (Resemblyzer) does not export to ONNX.

One thread everywhere; each round runs every system once in a rotating order, after warm-up calls;
the table gives medians. Cosines: ONNX vs our torch path, ours vs the peer, the minimum over three
speakers' utterances of that length (timing uses the first).

    OMP_NUM_THREADS=1 PYTHONPATH=src:. .venv/bin/python bench/pretrained_speed.py \\
        --out bench/pretrained_speed.md
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import onnxruntime as ort
import torch

from speakerprint.audio import load_audio
from speakerprint.convert import convert, recognise
from speakerprint.errors import BundleError
from speakerprint.export import export_onnx
from speakerprint.models.bundle import load_bundle
from speakerprint.utils.machine import cpu_flags, cpu_name
from tests.convert import peers

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data/speechocean762/train")
SPEAKERS = ["SPEAKER0001", "SPEAKER0005", "SPEAKER0006"]
SR = 16000


# --- audio -------------------------------------------------------------------------------------


def speaker_audio(speaker: str, seconds: float) -> np.ndarray:
    """``seconds`` of one speaker: its utterances (sorted) concatenated, then cut."""
    parts, total = [], 0
    for path in sorted((DATA / speaker).glob("*.opus")):
        wav = load_audio(path, SR)
        parts.append(wav)
        total += len(wav)
        if total >= seconds * SR:
            break
    wav = np.concatenate(parts)[: int(seconds * SR)]
    assert len(wav) == int(seconds * SR), (speaker, len(wav))
    return np.ascontiguousarray(wav, dtype=np.float32)


# --- peer front ends ---------------------------------------------------------------------------


def speakerlab_fbank(wav: np.ndarray) -> torch.Tensor:
    """3D-Speaker's ``FBank(80, mean_nor=True)``: kaldi.fbank defaults (povey, dither 0) on the
    [-1, 1] waveform, then the utterance mean subtracted -> (1, T, 80)."""
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SR
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "povey"
    opts.mel_opts.num_bins = 80
    opts.use_energy = False
    online = knf.OnlineFbank(opts)
    online.accept_waveform(SR, wav.tolist())
    online.input_finished()
    feats = torch.tensor(np.stack([online.get_frame(i) for i in range(online.num_frames_ready)]))
    return (feats - feats.mean(dim=0)).unsqueeze(0)


# --- families: (peer embed function, bundle folder) ----------------------------------------------


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    peers.perturb_batchnorm(model, seed)
    return model.eval()


def wespeaker_resnet(tmp: Path, name: str):
    from tests.convert.test_wespeaker import _save_wespeaker

    args = {"feat_dim": 80, "embed_dim": 256, "pooling_func": "TSTP", "two_emb_layer": False}
    torch.manual_seed(0)
    model = perturbed(getattr(peers.wespeaker_module("resnet"), name)(**args), 1)
    folder = _save_wespeaker(tmp / f"ws_{name}", model, name, args)
    source, checkpoint, config = recognise(folder)
    bundle = convert(source, checkpoint, tmp / f"ws_{name}_bundle", config=config)

    def peer(wav: np.ndarray) -> torch.Tensor:  # wespeaker/cli/speaker.py extract_embedding
        return model(peers.kaldi_fbank(wav))[-1][0]

    return peer, bundle


def pyannote_resnet34(tmp: Path):
    from tests.convert import test_pyannote as tp

    # The stand-in task classes under pyannote's module name, for pickling (as the test fixture).
    module = type(sys)(tp.TASK_MODULE)
    for cls in (tp.Problem, tp.Resolution, tp.Specifications):
        cls.__module__ = tp.TASK_MODULE
        setattr(module, cls.__name__, cls)
    sys.modules[tp.TASK_MODULE] = module
    resnet = tp._resnet34()
    checkpoint = tp._save_pyannote(tmp / "pyannote", resnet)
    bundle = convert("pyannote", checkpoint, tmp / "pyannote_bundle")

    def peer(wav: np.ndarray) -> torch.Tensor:  # WeSpeakerResNet34.forward: fbank, resnet[1]
        return resnet(peers.kaldi_fbank(wav))[1][0]

    return peer, bundle


_SB = None


def speechbrain_classes():
    """SpeechBrain's classes imported as tests/convert/test_speechbrain_peer.py does (no
    torchaudio: the three modules that name it at import time run without those statements)."""
    global _SB
    if _SB is not None:
        return _SB
    import importlib.util
    import types

    from tests.convert import test_speechbrain_peer as tsb

    root = Path(importlib.util.find_spec("speechbrain").submodule_search_locations[0])
    for package in tsb._PACKAGES:
        full = "speechbrain" + (f".{package}" if package else "")
        module = types.ModuleType(full)
        module.__path__ = [str(root.joinpath(*package.split(".")) if package else root)]
        sys.modules[full] = module
        if package:
            parent, _, child = full.rpartition(".")
            setattr(sys.modules[parent], child, module)
    for name in tsb._IMPORT_TIME_TORCHAUDIO:
        tsb._exec_without_torchaudio(name, root)
    for name in ["containers", "linear", "normalization", "activations"]:
        importlib.import_module(f"speechbrain.nnet.{name}")
    _SB = types.SimpleNamespace(
        Xvector=importlib.import_module("speechbrain.lobes.models.Xvector").Xvector,
        ECAPA_TDNN=importlib.import_module("speechbrain.lobes.models.ECAPA_TDNN").ECAPA_TDNN,
        Fbank=importlib.import_module("speechbrain.lobes.features").Fbank,
        InputNormalization=importlib.import_module(
            "speechbrain.processing.features"
        ).InputNormalization,
    )
    assert "torchaudio" not in sys.modules
    return _SB


# The hub hyperparams.yaml entries the converter reads, at the published sizes.
SB_XVECTOR_YAML = """\
n_mels: 24
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.Xvector.Xvector
    in_channels: !ref <n_mels>
    activation: !name:torch.nn.LeakyReLU
    tdnn_blocks: 5
    tdnn_channels: [512, 512, 512, 512, 1500]
    tdnn_kernel_sizes: [5, 3, 3, 1, 1]
    tdnn_dilations: [1, 2, 3, 1, 1]
    lin_neurons: 512
"""

SB_ECAPA_YAML = """\
n_mels: 80
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [1024, 1024, 1024, 1024, 3072]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 128
    lin_neurons: 192
"""


def speechbrain_model(tmp: Path, which: str):
    sb = speechbrain_classes()
    torch.manual_seed(0)
    if which == "xvector":
        model, n_mels, yaml = (
            sb.Xvector(in_channels=24, activation=torch.nn.LeakyReLU),
            24,
            SB_XVECTOR_YAML,
        )
    else:
        model = sb.ECAPA_TDNN(
            80,
            channels=[1024, 1024, 1024, 1024, 3072],
            dilations=[1, 2, 3, 4, 1],
            attention_channels=128,
            lin_neurons=192,
        )
        n_mels, yaml = 80, SB_ECAPA_YAML
    model = perturbed(model, 5)
    folder = tmp / f"spkrec-{which}"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "embedding_model.ckpt")
    (folder / "hyperparams.yaml").write_text(yaml)
    source, checkpoint, config = recognise(folder)
    bundle = convert(source, checkpoint, tmp / f"sb_{which}_bundle", config=config)
    fbank = sb.Fbank(n_mels=n_mels)
    norm = sb.InputNormalization(norm_type="sentence", std_norm=False).eval()
    ones = torch.ones(1)

    def peer(wav: np.ndarray) -> torch.Tensor:  # EncoderClassifier.encode_batch
        wavs = torch.from_numpy(wav)[None]
        feats = norm(fbank(wavs), ones)
        return model(feats, ones)[0, 0]

    return peer, bundle


def speakerlab_folder(tmp: Path, name: str, model, file_name: str, model_config: dict) -> Path:
    """``model`` saved as ModelScope ships it (configuration.json + bare state dict)."""
    folder = tmp / name
    folder.mkdir()
    config = {
        "framework": "pytorch",
        "task": "speaker-verification",
        "model": {
            "type": f"{name}-sv",
            "model_config": {"sample_rate": SR, "fbank_dim": 80, **model_config},
            "pretrained_model": file_name,
        },
        "pipeline": {"type": "speaker-verification"},
    }
    (folder / "configuration.json").write_text(json.dumps(config))
    torch.save(model.state_dict(), folder / file_name)
    return folder / file_name


def speakerlab_model(tmp: Path, which: str):
    torch.manual_seed(0)
    if which == "campplus":
        from speakerlab.models.campplus.DTDNN import CAMPPlus

        model = perturbed(CAMPPlus(feat_dim=80, embedding_size=192), 2)
        checkpoint = speakerlab_folder(
            tmp, "cam++", model, "campplus_cn_common.bin", {"emb_size": 192}
        )
    else:
        from speakerlab.models.eres2net.ERes2NetV2 import ERes2NetV2

        args = {"baseWidth": 26, "scale": 2, "expansion": 2}
        model = perturbed(ERes2NetV2(feat_dim=80, embedding_size=192, **args), 2)
        checkpoint = speakerlab_folder(
            tmp, "eres2netv2", model, "pretrained_eres2netv2.ckpt", {"embed_dim": 192, **args}
        )
    source, found, config = recognise(checkpoint.parent)
    bundle = convert(source, found, tmp / f"{which}_bundle", config=config)

    def peer(wav: np.ndarray) -> torch.Tensor:  # speakerlab/bin/infer_sv.py
        return model(speakerlab_fbank(wav))[0]

    return peer, bundle


def resemblyzer_model(tmp: Path):
    from speakerprint.convert.resemblyzer import installed_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from resemblyzer import VoiceEncoder, preprocess_wav
    encoder = VoiceEncoder("cpu", verbose=False)
    bundle = convert("resemblyzer", installed_checkpoint(), tmp / "resemblyzer_bundle")

    def peer(wav: np.ndarray) -> np.ndarray:
        return encoder.embed_utterance(preprocess_wav(wav, source_sr=SR))

    return peer, bundle


FAMILIES: dict[str, Callable] = {
    "WeSpeaker ResNet34": lambda tmp: wespeaker_resnet(tmp, "ResNet34"),
    "WeSpeaker ResNet293": lambda tmp: wespeaker_resnet(tmp, "ResNet293"),
    "pyannote WeSpeakerResNet34": pyannote_resnet34,
    "SpeechBrain ECAPA C=1024": lambda tmp: speechbrain_model(tmp, "ecapa"),
    "SpeechBrain x-vector": lambda tmp: speechbrain_model(tmp, "xvector"),
    "3D-Speaker CAM++ 192-d": lambda tmp: speakerlab_model(tmp, "campplus"),
    "3D-Speaker ERes2NetV2": lambda tmp: speakerlab_model(tmp, "eres2netv2"),
    "Resemblyzer GE2E (real weights)": resemblyzer_model,
}


# --- ONNX --------------------------------------------------------------------------------------


def onnx_runner(bundle_path: Path, bundle, out: Path):
    """(embed function, how the graph was exported) or (None, why not)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        export_onnx(bundle, out, with_features=True)
        kind = "with_features=True"
    except BundleError as e:
        if "LSTM" in str(e):
            return None, f"not exportable: {e}"
        try:
            export_onnx(bundle, out, with_features=False)
        except Exception as e:  # noqa: BLE001 - reported in the table, not hidden
            first = str(e).strip().splitlines()[0].split(" Please feel free")[0]
            return None, f"with_features=False export failed: {type(e).__name__}: {first}"
        kind = "with_features=False + our torch fbank"
    session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    if kind.startswith("with_features=True"):

        def run(wav: np.ndarray) -> np.ndarray:
            lengths = np.array([len(wav)], dtype=np.int64)
            return session.run(None, {"wav": wav[None], "lengths": lengths})[0][0]

    else:

        def run(wav: np.ndarray) -> np.ndarray:
            feats, frames = bundle.fbank(torch.from_numpy(wav)[None])
            inputs = {"feats": feats.numpy(), "lengths": frames.numpy().astype(np.int64)}
            return session.run(None, inputs)[0][0]

    return run, kind


# --- the run -----------------------------------------------------------------------------------


def timed(fn: Callable, wav: np.ndarray) -> float:
    start = time.perf_counter()
    fn(wav)
    return (time.perf_counter() - start) * 1000


def as_numpy(x) -> np.ndarray:
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def busy_others() -> str:
    """The other processes using over 20 % of a CPU right now, as ``ps`` names them."""
    out = subprocess.run(
        ["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True
    ).stdout.splitlines()[1:]
    busy = []
    for line in out:
        pid, pcpu, command = line.split(None, 2)
        if int(pid) != os.getpid() and float(pcpu) > 20:
            busy.append(f"`{command[:70]}` ({pcpu} %)")
    return "; ".join(busy) or "none"


def shared_note(before: str, after: str) -> str:
    """A plain sentence on whether other jobs shared the CPUs: this run uses one thread, so a
    1-minute load above 0.5 before it started, or above 1.5 at its end, is someone else's."""
    load = [float(x.split("load average:")[1].split(",")[0]) for x in (before, after)]
    if load[0] > 0.5 or load[1] > 1.5:
        return (
            f"Other jobs shared the {os.cpu_count()} CPUs "
            f"while this ran (1-minute load {load[0]:.2f} before, {load[1]:.2f} after): the "
            "times are inflated and noisier than on an idle machine; the rotating order spreads "
            "that over all systems alike."
        )
    return "The machine was otherwise idle (1-minute load below 0.5 before the run)."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "pretrained_speed.md")
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    parser.add_argument("--lengths", nargs="*", type=float, default=[3.0, 10.0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    before, busy_before = load_average(), busy_others()
    began = time.perf_counter()
    audio = {s: [speaker_audio(spk, s) for spk in SPEAKERS] for s in args.lengths}
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp_name, torch.no_grad():
        tmp = Path(tmp_name)
        for family in args.families:
            print(f"{family}: building", flush=True)
            peer, bundle_path = FAMILIES[family](tmp)
            bundle = load_bundle(bundle_path)
            params = sum(p.numel() for p in bundle.encoder.parameters())

            def ours(wav, bundle=bundle):
                return bundle.embed_batch(torch.from_numpy(wav)[None])[0]

            onnx, kind = onnx_runner(bundle_path, bundle, tmp / f"{len(rows)}.onnx")
            notes.append(f"- {family} ({params / 1e6:.2f}M parameters): ONNX {kind}")
            systems = {"peer": peer, "ours": ours} | ({"onnx": onnx} if onnx else {})
            for seconds in args.lengths:
                wavs = audio[seconds]
                for fn in systems.values():
                    for _ in range(args.warmup):
                        fn(wavs[0])
                times = {name: [] for name in systems}
                names = list(systems)
                for r in range(args.runs):
                    for name in names[r % len(names) :] + names[: r % len(names)]:
                        times[name].append(timed(systems[name], wavs[0]))
                embs = {n: [as_numpy(fn(w)) for w in wavs] for n, fn in systems.items()}
                cos_peer = min(peers.cosine(o, p) for o, p in zip(embs["ours"], embs["peer"]))
                cos_onnx = (
                    min(peers.cosine(x, o) for x, o in zip(embs["onnx"], embs["ours"]))
                    if onnx
                    else None
                )
                med = {n: statistics.median(t) for n, t in times.items()}
                row = (family, seconds, med["peer"], med["ours"], med.get("onnx"))
                rows.append((*row, cos_onnx, cos_peer))
                print(
                    f"  {seconds:g} s: peer {med['peer']:.1f} ms, ours {med['ours']:.1f} ms, "
                    f"onnx {med.get('onnx', float('nan')):.1f} ms, cos onnx {cos_onnx}, "
                    f"cos peer {cos_peer:.7f}",
                    flush=True,
                )
    elapsed = time.perf_counter() - began
    after, busy_after = load_average(), busy_others()

    flags = cpu_flags()
    simd = ", ".join(
        f"{f} {'yes' if f in flags else 'no'}" for f in ("avx2", "avx512f", "avx512_vnni")
    )
    command = (
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')} "
        f"PYTHONPATH=src:. {sys.executable} bench/pretrained_speed.py "
        + " ".join(shlex.quote(a) for a in sys.argv[1:])
    )
    lines = [
        "# Converted pretrained families: CPU embedding time vs the original code, and ONNX",
        "",
        "Written by `bench/pretrained_speed.py` (its docstring says what each column runs).",
        "Peer models are the peers' own code at the published sizes with random weights",
        "(Resemblyzer: the real weights of its wheel); ours is the converted bundle,",
        "`load_bundle(folder).embed_batch(wav[None])`, features included. WeSpeaker, pyannote",
        "and 3D-Speaker features are kaldi-native-fbank standing in for torchaudio's",
        "`kaldi.fbank` (torchaudio is not installed), so their peer times include",
        "kaldi-native-fbank, not torchaudio. TitaNet is not here: NeMo, its original, is not",
        "installed.",
        "",
        f"Audio: speechocean762 {', '.join(SPEAKERS)}; each length is one speaker's",
        "utterances concatenated and cut; timing on the first speaker, cosines the minimum over",
        "the three. One thread (torch, OMP, onnxruntime intra/inter-op 1);",
        f"{args.warmup} warm-up call(s), median of {args.runs} runs per system, systems in",
        "rotating order.",
        "",
        "| family | length | peer ms | ours ms | speed-up (peer/ours) | ONNX ms | "
        "cosine ONNX vs torch | cosine ours vs peer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for family, seconds, peer_ms, ours_ms, onnx_ms, cos_onnx, cos_peer in rows:
        onnx_cell = f"{onnx_ms:.1f}" if onnx_ms is not None else "n/a"
        cos_onnx_cell = f"{cos_onnx:.7f}" if cos_onnx is not None else "n/a"
        lines.append(
            f"| {family} | {seconds:g} s | {peer_ms:.1f} | {ours_ms:.1f} | "
            f"{peer_ms / ours_ms:.2f}x | {onnx_cell} | {cos_onnx_cell} | {cos_peer:.7f} |"
        )
    lines += ["", "ONNX export per family:", "", *notes, ""]
    lines += [
        "Command:",
        "",
        f"    {command}",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs; SIMD: {simd}; "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, "
        f"Python {sys.version.split()[0]}. Wall time of the run: {elapsed:.0f} s.",
        "",
        "Load (`uptime`) before and after the run:",
        "",
        f"    before: {before}",
        f"    after:  {after}",
        "",
        f"Other busy processes before: {busy_before}; after: {busy_after}.",
        "",
        shared_note(before, after),
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
