"""Export parity on real speech: the shipped model through every export path, on the dev split.

Exports ``src/speakerprint/pretrained/ecapa_c512_speechocean762`` to TorchScript and ONNX, with
the features inside the model and without (fbank computed by torch), quantises the ONNX model to
int8 (dynamic, and static with ranges calibrated on ``--calibration`` training utterances, whose
speakers are not in dev), embeds every utterance of the speechocean762 dev split (25 speakers, full length, one at a
time, so no padding) through each path, and writes ``docs/results/export_parity.md``: the largest
absolute embedding difference against eager torch, the cosine to eager, and each path's EER and
minDCF on the dev trials.

    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/export_parity_speechocean762.py
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from speakerprint.audio import load_audio
from speakerprint.data.manifest import read_manifest
from speakerprint.data.trials import read_trials
from speakerprint.eval.metrics import compute_eer, compute_min_dcf
from speakerprint.export import export_onnx, export_torchscript, quantize_onnx_int8
from speakerprint.inference.encoder import default_model_path
from speakerprint.models.bundle import load_bundle
from speakerprint.onnx_runtime import OnnxSpeakerEncoder
from speakerprint.utils.io import atomic_write_text
from speakerprint.utils.machine import cpu_name

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=default_model_path())
    parser.add_argument("--data", type=Path, default=REPO / "runs" / "so762" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "export_parity.md")
    parser.add_argument(
        "--limit", type=int, default=None, help="First N utterances (a quick check)"
    )
    parser.add_argument(
        "--calibration",
        type=int,
        default=64,
        help="Training utterances (drawn with a fixed seed) that calibrate the static int8 model",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()

    utts = read_manifest(args.data / "dev.jsonl")[: args.limit]
    trials = read_trials(args.data / "dev_trials.txt")
    known = {u.utt_id for u in utts}
    trials = [t for t in trials if t.enrol in known and t.test in known]
    bundle = load_bundle(args.bundle)
    wavs = [load_audio(u.path, bundle.sample_rate) for u in utts]
    audio_s = sum(len(w) for w in wavs) / bundle.sample_rate
    train = read_manifest(args.data / "train.jsonl")
    assert not {u.speaker for u in train} & {u.speaker for u in utts}, (
        "train and dev share speakers"
    )
    draw = np.random.default_rng(0).choice(len(train), args.calibration, replace=False)
    calibration = [load_audio(train[i].path, bundle.sample_rate) for i in sorted(draw)]
    print(f"{len(utts)} utterances ({audio_s / 60:.1f} min), {len(trials)} trials", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ts_wav = torch.jit.load(
            str(export_torchscript(args.bundle, tmp / "w.pt", with_features=True))
        )
        ts_feats = torch.jit.load(
            str(export_torchscript(args.bundle, tmp / "f.pt", with_features=False))
        )
        onnx_wav = export_onnx(args.bundle, tmp / "w.onnx", with_features=True)
        onnx_feats = export_onnx(args.bundle, tmp / "f.onnx", with_features=False)
        onnx_int8 = quantize_onnx_int8(onnx_wav, tmp / "w.int8.onnx")
        onnx_static = quantize_onnx_int8(onnx_wav, tmp / "w.s8.onnx", calibration=calibration)
        sizes = {p.name: p.stat().st_size / 1e6 for p in (onnx_wav, onnx_int8, onnx_static)}
        ort_wav = OnnxSpeakerEncoder.from_file(onnx_wav, num_threads=1)
        ort_int8 = OnnxSpeakerEncoder.from_file(onnx_int8, num_threads=1)
        ort_static = OnnxSpeakerEncoder.from_file(onnx_static, num_threads=1)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        ort_feats = ort.InferenceSession(
            str(onnx_feats), options, providers=["CPUExecutionProvider"]
        )

        def feats_of(wav: np.ndarray):
            x = torch.from_numpy(wav)[None]
            return bundle.fbank(x, torch.tensor([x.shape[1]]))

        @torch.no_grad()
        def ts_features_outside(wav):
            return ts_feats(*feats_of(wav)).numpy()[0]

        @torch.no_grad()
        def onnx_features_outside(wav):
            feats, frames = feats_of(wav)
            return ort_feats.run(None, {"feats": feats.numpy(), "lengths": frames.numpy()})[0][0]

        paths = {
            "eager torch (Bundle.embed_batch)": lambda w: bundle.embed_batch(
                torch.from_numpy(w)[None]
            ).numpy()[0],
            "TorchScript, features inside": lambda w: (
                ts_wav(torch.from_numpy(w)[None], torch.tensor([len(w)])).detach().numpy()[0]
            ),
            "TorchScript, encoder only (torch fbank)": ts_features_outside,
            "ONNX fp32, features inside (no torch)": ort_wav.embed,
            "ONNX fp32, encoder only (torch fbank)": onnx_features_outside,
            "ONNX int8 dynamic, features inside (no torch)": ort_int8.embed,
            f"ONNX int8 static ({args.calibration} calibration utterances), features inside "
            "(no torch)": ort_static.embed,
        }
        embeddings, seconds = {}, {}
        for name, fn in paths.items():
            t0 = time.perf_counter()
            with torch.no_grad():
                embeddings[name] = np.stack([fn(w) for w in wavs])
            seconds[name] = time.perf_counter() - t0
            print(f"{name}: {seconds[name]:.0f} s", flush=True)

    index = {u.utt_id: i for i, u in enumerate(utts)}
    enrol = np.array([index[t.enrol] for t in trials])
    test = np.array([index[t.test] for t in trials])
    labels = np.array([t.label for t in trials])
    eager = embeddings[next(iter(paths))]
    rows, eers = [], {}
    for name, emb in embeddings.items():
        unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        scores = (unit[enrol] * unit[test]).sum(1)
        eer = compute_eer(scores, labels)
        dcf = compute_min_dcf(scores, labels, p_target=0.01)
        eers[name] = eer.eer
        eager_unit = eager / np.linalg.norm(eager, axis=1, keepdims=True)
        cosine = (unit * eager_unit).sum(1)
        rows.append(
            f"| {name} | {np.abs(emb - eager).max():.2e} | {cosine.min():.6f} | "
            f"{100 * eer.eer:.2f}% | {dcf.min_dcf:.4f} | {seconds[name]:.0f} s |"
        )
    scale = np.abs(eager).max()
    base = eers[next(iter(paths))]
    change = ", ".join(
        f"{name.split(',')[0]} {100 * (eer - base) / base:+.1f}%"
        for name, eer in eers.items()
        if "int8" in name
    )
    wall = time.perf_counter() - start
    command = "OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/export_parity_speechocean762.py"
    if args.limit:
        command += f" --limit {args.limit}"
    if args.calibration != 64:
        command += f" --calibration {args.calibration}"
    text = "\n".join(
        [
            "# Export parity on speechocean762 dev",
            "",
            f"The shipped model ({args.bundle.name}, ECAPA-TDNN C=512) through every export path, "
            f"on the dev split of `{args.data}`: {len(utts)} utterances of "
            f"{len({u.speaker for u in utts})} speakers ({audio_s / 60:.1f} min of audio), "
            f"{len(trials)} trials, full-length embeddings, one utterance per call (no padding), "
            "cosine scoring. Largest embedding component of eager torch: "
            f"{scale:.2f}. minDCF at p_target=0.01, C_miss=C_fa=1.",
            "",
            "| path | max abs difference to eager | min cosine to eager | EER | minDCF (p=0.01) "
            "| wall time |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Relative EER change against eager torch: {change}.",
            "",
            f"ONNX model sizes: fp32 {sizes['w.onnx']:.1f} MB, int8 dynamic "
            f"{sizes['w.int8.onnx']:.1f} MB, int8 static {sizes['w.s8.onnx']:.1f} MB "
            "(the encoder's Conv, MatMul and Gemm weights; static: per-channel int8 weights and "
            "uint8 activations with ranges from the calibration utterances, QDQ format; the fbank "
            "stays fp32; see `speakerprint.export.quantize_onnx_int8`). ONNX graphs come from torch's TorchScript-based exporter, opset 17; with "
            "features inside, the DFT is a float32 matmul (see `speakerprint/features/fbank.py`), "
            "which is where the features-inside paths differ from eager.",
            "",
            f"Machine: {cpu_name()}, {platform.machine()}, one thread per path "
            f"(OMP_NUM_THREADS=1, torch.set_num_threads(1), onnxruntime intra_op_num_threads=1), "
            f"Python {platform.python_version()}, torch {torch.__version__}, onnxruntime "
            f"{ort.__version__}; other jobs shared the CPU, so wall times are not a benchmark "
            f"(see `bench/cpu_inference.py`). Total wall time {wall:.0f} s.",
            "",
            "```bash",
            command,
            "```",
            "",
        ]
    )
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
