"""CPU inference speed side by side with SpeechBrain and WeSpeaker: real-time factor and ratios.

Same process, same thread settings, same waveform for every system in a cell. For each of our
models that has a peer (ECAPA-TDNN C=1024, C=512, ResNet34) and each thread count and utterance
length, it times:

- ours: eager torch (features+embedding, features only, embedding only), and the exported ONNX
  graph (fbank inside) in fp32, int8 dynamic and int8 static, as in ``cpu_inference.py``;
- each peer, eager torch fp32, with its own front end: features+embedding, features only,
  embedding only.

Peers (benchmark-only dependencies; speakerprint never imports them; random weights, as for ours,
since speed does not depend on the weight values):

- ``sb_ecapa_c1024``: SpeechBrain ``speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN`` with the
  spkrec-ecapa-voxceleb hyperparameters (80 mel in, channels [1024, 1024, 1024, 1024, 3072],
  attention 128, lin_neurons 192; 20.77M parameters), front end SpeechBrain's own
  ``speechbrain.lobes.features.Fbank(n_mels=80)`` + ``InputNormalization(norm_type="sentence",
  std_norm=False)``, called as its ``EncoderClassifier.encode_batch`` does.
- ``sb_ecapa_c512``: the same with channels [512, 512, 512, 512, 1536] (6.19M).
- ``ws_ecapa_c1024`` / ``ws_ecapa_c512`` / ``ws_resnet34``: WeSpeaker's
  ``wespeaker.models.ecapa_tdnn.ECAPA_TDNN_GLOB_c1024`` / ``ECAPA_TDNN_GLOB_c512`` (80 in, 192 out,
  attentive pooling with global context as in WeSpeaker's VoxCeleb ECAPA recipes; 14.66M / 6.19M;
  the non-GLOB factories lack the context inputs of the pooling attention, 0.39M fewer) and ``wespeaker.models.resnet.ResNet34`` (80 in, 256 out; 6.63M) from the
  ``wespeaker-unofficial`` wheel. WeSpeaker's own front end is
  ``torchaudio.compliance.kaldi.fbank`` (80 bins, 25/10 ms, hamming, dither 0, int16 scale) + mean
  subtraction; torchaudio has no CPU build here, so the stand-in is kaldi-native-fbank with the same
  options (one C++ thread) + the same mean subtraction in torch. Their "features" rows therefore
  time kaldi-native-fbank, not torchaudio; their "embedding only" rows are WeSpeaker's code as is.

Import work-arounds, for this benchmark only:

- speechbrain imports torchaudio at module level (``speechbrain.nnet.CNN``, used only by
  ``GaborConv1d._mel_filters``; ``speechbrain.utils.torch_audio_backend`` reads its version). When
  torchaudio is not installed, a stub module is put into ``sys.modules`` first; it has only
  ``__version__`` and raises ``AttributeError`` on any other attribute, so a code path that used
  torchaudio would fail loudly rather than be timed wrongly. The paths timed here (Fbank's STFT and
  mel filterbank, InputNormalization, ECAPA_TDNN) do not touch it: the runs complete.
- ``wespeaker/__init__.py`` imports its CLI (torchaudio, silero-vad, s3prl, whisper, ...). The
  package is registered as a bare namespace with its install path, so only ``wespeaker.models.*``
  (which import torch alone) are loaded.

Each cell: ``--warmup`` untimed calls per system, then ``--iterations`` rounds in which every
system runs once, in a rotating order (so load drift from other jobs hits all systems alike); the
table gives the median and interquartile range of the real-time factor (wall time / audio
duration), and for peer rows the ratio peer / ours: against our eager torch in the same scope, and
(features+embedding rows) against our fastest runtime. Ratios above 1 mean we are faster.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/cpu_inference_peers.py \\
        --out bench/cpu_inference_peers.md
    PYTHONPATH=src python bench/cpu_inference_peers.py --peers ws_ecapa_c512 --durations 3 \\
        --threads 1 --iterations 2      # a quick check that it runs
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from _calibration import calibration_waveforms
from _peers import import_speechbrain, import_wespeaker_models
from cpu_inference import SAMPLE_RATE, _session, _timings

from speakerprint.export import export_onnx, quantize_onnx_int8
from speakerprint.features import Fbank, FbankConfig
from speakerprint.models import create_model
from speakerprint.utils.io import atomic_write_text
from speakerprint.utils.machine import cpu_name

# peer name -> our model it is compared with
PEERS = {
    "sb_ecapa_c1024": "ecapa_tdnn_c1024",
    "sb_ecapa_c512": "ecapa_tdnn_c512",
    "ws_ecapa_c1024": "ecapa_tdnn_c1024",
    "ws_ecapa_c512": "ecapa_tdnn_c512",
    "ws_resnet34": "resnet34",
}
SCOPES = ("features+embedding", "features only", "embedding only")


@dataclass
class System:
    """One system of a cell: a label and a callable per (runtime, scope)."""

    label: str
    params: int
    runners: dict[tuple[str, str], Callable[[], object]]


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _speechbrain_system(name: str, wav: torch.Tensor) -> System:
    _, SBFbank, InputNormalization, ECAPA_TDNN = import_speechbrain()
    channels = [1024] * 4 + [3072] if name == "sb_ecapa_c1024" else [512] * 4 + [1536]
    torch.manual_seed(0)
    model = ECAPA_TDNN(
        input_size=80,
        channels=channels,
        kernel_sizes=[5, 3, 3, 3, 1],
        dilations=[1, 2, 3, 4, 1],
        attention_channels=128,
        lin_neurons=192,
    ).eval()
    fbank = SBFbank(n_mels=80).eval()
    norm = InputNormalization(norm_type="sentence", std_norm=False).eval()
    rel = torch.ones(wav.shape[0])

    @torch.no_grad()
    def features():
        return norm(fbank(wav), rel)

    feats = features()

    @torch.no_grad()
    def embedding():
        return model(feats, rel)

    @torch.no_grad()
    def full():
        return model(features(), rel)

    runners = {
        ("eager torch", "features+embedding"): full,
        ("eager torch", "features only"): features,
        ("eager torch", "embedding only"): embedding,
    }
    return System(f"SpeechBrain {name[3:]}", _n_params(model), runners)


def _wespeaker_system(name: str, wav: torch.Tensor) -> System:
    import kaldi_native_fbank as knf

    torch.manual_seed(0)
    if name == "ws_resnet34":
        model = import_wespeaker_models("resnet").ResNet34(feat_dim=80, embed_dim=256)
    else:
        # the GLOB (global-context attentive pooling) variants: those of WeSpeaker's VoxCeleb recipes
        factory = "ECAPA_TDNN_GLOB_c1024" if name == "ws_ecapa_c1024" else "ECAPA_TDNN_GLOB_c512"
        model = getattr(import_wespeaker_models("ecapa_tdnn"), factory)(feat_dim=80, embed_dim=192)
    model.eval()
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.frame_length_ms = 25.0
    opts.frame_opts.frame_shift_ms = 10.0
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hamming"
    opts.mel_opts.num_bins = 80
    opts.energy_floor = 0.0
    opts.use_energy = False
    samples = (wav[0] * (1 << 15)).numpy().astype(np.float32)

    def features():
        online = knf.OnlineFbank(opts)
        online.accept_waveform(SAMPLE_RATE, samples)
        online.input_finished()
        frames = torch.from_numpy(
            np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])
        )
        return (frames - frames.mean(dim=0)).unsqueeze(0)

    feats = features()

    @torch.no_grad()
    def embedding():
        return model(feats.clone())[-1]  # ResNet's forward unsqueezes its input in place

    @torch.no_grad()
    def full():
        return model(features())[-1]

    runners = {
        ("eager torch", "features+embedding"): full,
        ("eager torch", "features only"): features,
        ("eager torch", "embedding only"): embedding,
    }
    return System(f"WeSpeaker {name[3:]}", _n_params(model), runners)


def _our_system(
    name: str,
    model: torch.nn.Module,
    fbank: Fbank,
    sessions: dict,
    wav: torch.Tensor,
    compiled: torch.nn.Module | None = None,
) -> System:
    lengths = torch.tensor([wav.shape[1]])

    @torch.no_grad()
    def features():
        return fbank(wav, lengths)

    feats, feat_lengths = features()

    @torch.no_grad()
    def embedding():
        return model(feats, feat_lengths)

    @torch.no_grad()
    def full():
        return model(*features())

    runners = {
        ("eager torch", "features+embedding"): full,
        ("eager torch", "features only"): features,
        ("eager torch", "embedding only"): embedding,
    }
    if compiled is not None:  # what Bundle.compile() / SpeakerEncoder(compile=True) run
        runners[("torch.compile", "features+embedding")] = torch.no_grad()(
            lambda: compiled(*features())
        )
    feeds = {"wav": wav.numpy(), "lengths": lengths.numpy()}
    for kind, session in sessions.items():
        runners[(kind, "features+embedding")] = lambda s=session, f=feeds: s.run(None, f)
    return System(f"speakerprint {name}", _n_params(model), runners)


def _time_cell(systems: list[System], warmup: int, iterations: int) -> dict:
    """Seconds per call for every (system, runtime, scope), in rotating round-robin order."""
    calls = [(i, key, fn) for i, s in enumerate(systems) for key, fn in s.runners.items()]
    for _, _, fn in calls:
        _timings(fn, warmup, 0)
    times: dict = {(i, key): [] for i, key, _ in calls}
    for r in range(iterations):
        shift = r % len(calls)
        for i, key, fn in calls[shift:] + calls[:shift]:
            times[(i, key)].append(_timings(fn, 0, 1)[0])
    return {k: np.array(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", nargs="+", choices=list(PEERS), default=list(PEERS))
    parser.add_argument("--durations", nargs="+", type=float, default=[3.0, 10.0, 60.0])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-onnx", action="store_true", help="Time our eager torch path only")
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="Also time ours through torch.compile with inductor freezing (Bundle.compile); "
        "the warm-up calls compile each new length",
    )
    parser.add_argument("--out", type=Path, default=None, help="Also write the table here")
    args = parser.parse_args()

    ours_names = list(dict.fromkeys(PEERS[p] for p in args.peers))
    calibration, calibration_source = calibration_waveforms()
    rows = []
    versions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for ours in ours_names:
            peers = [p for p in args.peers if PEERS[p] == ours]
            torch.manual_seed(0)
            model = create_model(ours).eval()
            fbank = Fbank(FbankConfig(num_mel_bins=model.feat_dim)).eval()
            compiled = torch.compile(model, options={"freezing": True}) if args.compiled else None
            onnx_paths = {}
            if not args.no_onnx:
                fp32 = export_onnx(
                    model, Path(tmp) / f"{ours}.onnx", with_features=True, fbank_config=fbank.config
                )
                onnx_paths = {
                    "onnx fp32": fp32,
                    "onnx int8 dynamic": quantize_onnx_int8(fp32, Path(tmp) / f"{ours}.dyn.onnx"),
                    "onnx int8 static": quantize_onnx_int8(
                        fp32, Path(tmp) / f"{ours}.static.onnx", calibration=calibration
                    ),
                }
            for threads in args.threads:
                torch.set_num_threads(threads)
                sessions = {kind: _session(path, threads) for kind, path in onnx_paths.items()}
                for seconds in args.durations:
                    n = int(seconds * SAMPLE_RATE)
                    wav = 0.1 * torch.randn(1, n, generator=torch.Generator().manual_seed(1))
                    systems = [_our_system(ours, model, fbank, sessions, wav, compiled)]
                    for peer in peers:
                        build = _speechbrain_system if peer.startswith("sb_") else _wespeaker_system
                        systems.append(build(peer, wav))
                    times = _time_cell(systems, args.warmup, args.iterations)
                    medians = {k: float(np.median(v)) for k, v in times.items()}
                    ours_fastest = min(
                        m
                        for (i, (_, scope)), m in medians.items()
                        if i == 0 and scope == "features+embedding"
                    )
                    for (i, (runtime, scope)), t in times.items():
                        rtf = t / seconds
                        q1, median, q3 = np.percentile(rtf, [25, 50, 75])
                        vs_eager = vs_fastest = ""
                        if i > 0:
                            peer_median = medians[(i, (runtime, scope))]
                            vs_eager = f"{peer_median / medians[(0, ('eager torch', scope))]:.2f}"
                            if scope == "features+embedding":
                                vs_fastest = f"{peer_median / ours_fastest:.2f}"
                        system = systems[i]
                        rows.append(
                            f"| {ours} | {threads} | {seconds:g} s | {system.label} | "
                            f"{system.params / 1e6:.2f}M | {runtime} | {scope} | {median:.4f} | "
                            f"{q3 - q1:.4f} | {vs_eager} | {vs_fastest} |"
                        )
                        print(rows[-1], flush=True)
            for peer in peers:
                if peer.startswith("sb_"):
                    versions["speechbrain"] = import_speechbrain()[0]
                else:
                    versions["wespeaker-unofficial"] = importlib.metadata.version(
                        "wespeaker-unofficial"
                    )
                    versions["kaldi-native-fbank"] = importlib.metadata.version(
                        "kaldi-native-fbank"
                    )
    peer_versions = ", ".join(f"{k} {v}" for k, v in versions.items())
    table = "\n".join(
        [
            "| ours | threads | utterance | system | params | runtime | scope | RTF median | "
            "RTF IQR | peer / ours eager (same scope) | peer / ours fastest |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Machine: {cpu_name()} ({platform.machine()}), torch {torch.__version__}, "
            f"onnxruntime {ort.__version__}, {peer_versions}; random weights; one utterance per "
            f"call; {args.warmup} warm-up calls per system, then {args.iterations} rounds with "
            "every system once per round in rotating order. Ratios are of median times; above 1 "
            "means speakerprint is faster. WeSpeaker's features are kaldi-native-fbank standing "
            "in for torchaudio.compliance.kaldi.fbank (not available here). Static int8 "
            f"calibrated on {calibration_source}.",
        ]
    )
    print()
    print(table)
    if args.out is not None:
        atomic_write_text(args.out, table + "\n")


if __name__ == "__main__":
    main()
