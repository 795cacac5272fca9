"""Static int8 ONNX on every x86 CPU: cosine to the float model on real speech, and the speed-up.

For each model: the float32 export (features inside) and its static int8 export, calibrated on
real speech; the cosine between their embeddings of held-out real speech, natively and under
``qemu-x86_64 -cpu Haswell`` (an AVX2 CPU without AVX-512 or VNNI, emulated exactly), and the
int8 speed-up natively (one thread, one 10 s utterance; median of the timed calls). With
``--arm ROOT`` the cosines are also measured on an emulated arm64 CPU (``qemu-aarch64``, an arm64
Python and onnxruntime made by ``bench/arm64_sysroot.sh ROOT``). The shipped
model also gets 8-bit weights (which x86 CPUs without VNNI saturate), and the former default:
8-bit weights with every layer of the encoder in int8.

Held-out speech: the second utterance of each dev speaker of the shipped model (speakers it never
trained on), cut to ``--seconds``; calibration: the first utterance of the first 32 other
speechocean762 speakers, 10 s each. The models other than the shipped one have random weights
from the registered factories (seed 0): no trained weights of them ship.

    apt-get install qemu-user      # for the Haswell column
    bash bench/arm64_sysroot.sh /opt/arm64root      # for the ARM column (--arm)
    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/int8_portability.py --arm /opt/arm64root \
        --out bench/int8_portability.md
    PYTHONPATH=src python bench/int8_portability.py --models shipped --held-out 2 --no-haswell
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "speechocean762" / "train"
SHIPPED = (
    Path(__file__).resolve().parents[1] / "src/speakerprint/pretrained/ecapa_c512_speechocean762"
)
FAMILIES = ["ecapa_tdnn_c512", "titanet_s", "resnet34", "xvector", "deep_speaker"]
SAMPLE_RATE = 16000
# qemu's Haswell model without the features its TCG lacks (it warns of each; none is SIMD).
_HASWELL = "Haswell,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm"


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _embed(path: Path, waves: list[np.ndarray]) -> np.ndarray:
    session = _session(path)
    rows = [session.run(None, {"wav": w[None], "lengths": np.array([len(w)])})[0] for w in waves]
    return np.concatenate(rows).astype(np.float64)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _score(work: Path) -> dict:
    """Cosines of every int8 export to its float export on the held-out audio (in this process)."""
    held = np.load(work / "held_out.npz")
    waves = [held[k] for k in held.files]
    out = {}
    for fp32 in sorted(work.glob("*.fp32.onnx")):
        name = fp32.name.removesuffix(".fp32.onnx")
        reference = _embed(fp32, waves)
        out[name] = {"fp32_embeddings": reference.tolist()}
        for int8 in sorted(work.glob(f"{name}.int8-*.onnx")):
            scheme = int8.name.removesuffix(".onnx").split(".int8-")[1]
            cos = _cosines(reference, _embed(int8, waves))
            out[name][scheme] = {"min": float(cos.min()), "mean": float(cos.mean())}
    return out


def _audio(held_out: int, seconds: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from speakerprint.audio import load_audio

    dev = (SHIPPED / "dev_speakers.txt").read_text().split()
    others = sorted(p.name for p in SHARED.iterdir() if p.name not in dev)[:32]
    calibration = [
        load_audio(min((SHARED / s).glob("*.opus")), SAMPLE_RATE, duration_s=10.0) for s in others
    ]
    held = [
        load_audio(sorted((SHARED / s).glob("*.opus"))[1], SAMPLE_RATE, duration_s=seconds)
        for s in dev[:held_out]
    ]
    return calibration, held


def _export(name: str, work: Path, calibration, schemes: list[str]) -> None:
    import torch

    import speakerprint.export.onnx as onnx_export
    from speakerprint.export import export_onnx, quantize_onnx_int8
    from speakerprint.features import FbankConfig
    from speakerprint.models import create_model

    if name == "shipped":
        source, config = SHIPPED, None
    else:
        torch.manual_seed(0)
        source = create_model(name).eval()
        config = FbankConfig(num_mel_bins=source.feat_dim)
    fp32 = export_onnx(source, work / f"{name}.fp32.onnx", with_features=True, fbank_config=config)
    # For comparison only: 8-bit weights, which AVX2 without VNNI saturates ("u8s8"), and the
    # former default, which also quantised the encoder's first and last layers ("u8s8-all").
    onnx_export.INT8_SCHEMES.setdefault("u8s8", ("QUInt8", "QInt8", False))
    onnx_export.INT8_SCHEMES.setdefault("u8s8-all", ("QUInt8", "QInt8", False))
    float_nodes = onnx_export._float_nodes
    for scheme in schemes:
        if scheme == "u8s8-all":
            onnx_export._float_nodes = lambda model, ends: float_nodes(model, ends=False)
        try:
            quantize_onnx_int8(
                fp32,
                work / f"{name}.int8-{scheme}.onnx",
                calibration=calibration,
                scheme=scheme,
                min_cosine=0.0,
            )
        finally:
            onnx_export._float_nodes = float_nodes


def _speed(work: Path, name: str, scheme: str, iterations: int) -> tuple[float, float]:
    wav = (0.1 * np.random.default_rng(0).standard_normal(10 * SAMPLE_RATE)).astype(np.float32)
    feed = {"wav": wav[None], "lengths": np.array([len(wav)])}
    times = []
    for path in (work / f"{name}.fp32.onnx", work / f"{name}.int8-{scheme}.onnx"):
        session = _session(path)
        session.run(None, feed)
        runs = []
        for _ in range(iterations):
            start = time.perf_counter()
            session.run(None, feed)
            runs.append(time.perf_counter() - start)
        times.append(float(np.median(runs)))
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["shipped", *FAMILIES])
    parser.add_argument("--held-out", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--iterations", type=int, default=7)
    parser.add_argument("--no-haswell", action="store_true")
    parser.add_argument("--arm", type=Path, help="an arm64 root made by bench/arm64_sysroot.sh")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--score", type=Path, help=argparse.SUPPRESS)  # the emulated half
    args = parser.parse_args()
    if args.score:
        (args.score / f"scores_{platform.machine()}.json").write_text(
            json.dumps(_score(args.score))
        )
        return

    import torch

    from speakerprint.utils.io import atomic_write_text
    from speakerprint.utils.machine import cpu_flags, cpu_name

    torch.set_num_threads(1)
    calibration, held = _audio(args.held_out, args.seconds)
    qemu = None if args.no_haswell else shutil.which("qemu-x86_64")
    if not args.no_haswell and qemu is None:
        sys.exit("qemu-x86_64 not found: apt-get install qemu-user, or pass --no-haswell")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        np.savez(work / "held_out.npz", *held)
        for name in args.models:
            schemes = ["u8s7", "u8s8", "u8s8-all"] if name == "shipped" else ["u8s7"]
            _export(name, work, calibration, schemes)
            print(f"exported {name}", file=sys.stderr, flush=True)
        native = _score(work)
        runs = {}  # the emulated CPUs score side by side, one process each
        if qemu:
            runs["haswell"] = subprocess.Popen(
                [qemu, "-cpu", _HASWELL, sys.executable, __file__, "--score", str(work)],
                stderr=subprocess.DEVNULL,
            )
        if args.arm:
            runs["arm64"] = subprocess.Popen(
                [
                    "qemu-aarch64",
                    "-L",
                    str(args.arm),
                    str(args.arm / "usr/bin/python3.11"),
                    __file__,
                    "--score",
                    str(work),
                ],
                env={"PYTHONPATH": str(args.arm / "site"), "OMP_NUM_THREADS": "1"},
                stderr=subprocess.DEVNULL,
            )
        start = time.perf_counter()
        for cpu, process in runs.items():
            if process.wait() != 0:
                sys.exit(f"the {cpu} run failed (exit {process.returncode})")
        print(f"emulated in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        emulated = {
            cpu: json.loads((work / f"scores_{machine}.json").read_text())
            for cpu, machine in (("haswell", "x86_64"), ("arm64", "aarch64"))
            if cpu in runs
        }
        for name in args.models:
            for scheme in [s for s in native[name] if s != "fp32_embeddings"]:
                fp32_s, int8_s = _speed(work, name, scheme, args.iterations)
                row = {
                    "model": "ecapa_tdnn_c512 (shipped, trained)" if name == "shipped" else name,
                    "scheme": scheme,
                    "native": native[name][scheme],
                    "haswell": emulated.get("haswell", {}).get(name, {}).get(scheme),
                    "arm64": emulated.get("arm64", {}).get(name, {}).get(scheme),
                    "fp32_ms": 1000 * fp32_s,
                    "int8_ms": 1000 * int8_s,
                }
                for cpu, scores in emulated.items():  # float32 itself agrees across CPUs
                    row[f"fp32_native_vs_{cpu}"] = float(
                        _cosines(
                            np.array(native[name]["fp32_embeddings"]),
                            np.array(scores[name]["fp32_embeddings"]),
                        ).min()
                    )
                rows.append(row)
                print(json.dumps(row), flush=True)

    lines = [
        "# Static int8 on CPUs with and without VNNI",
        "",
        f"Machine: {cpu_name()} (flags: {', '.join(cpu_flags()) or 'unknown'}), "
        f"{platform.system()} {platform.machine()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}. Haswell: "
        "`qemu-x86_64 -cpu Haswell` on the same machine (AVX2 and FMA, no AVX-512, no VNNI).",
        "",
        f"Cosine between the int8 and the float32 export's embeddings of {len(held)} held-out "
        f"speechocean762 utterances ({args.seconds:g} s, speakers the shipped model never "
        "trained on), min / mean; speed: one 10 s utterance, one thread, features included, "
        f"median of {args.iterations} calls (native only). u8s7 is the default "
        "(7-bit weights, the encoder's first and last layers in float); for the shipped model "
        "only, u8s8 has 8-bit weights and u8s8-all is the former default (8-bit weights, every "
        "layer of the encoder in int8). Models other than the shipped one have random weights.",
        "",
        "| model | scheme | cosine native (min / mean) | cosine Haswell (min / mean) | "
        "cosine arm64 (min / mean) | fp32 ms | int8 ms | speed-up |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = [
            f"{c['min']:.5f} / {c['mean']:.5f}" if c else "not run"
            for c in (row["native"], row["haswell"], row["arm64"])
        ]
        lines.append(
            f"| {row['model']} | {row['scheme']} | {' | '.join(cells)} | {row['fp32_ms']:.1f} | "
            f"{row['int8_ms']:.1f} | {row['fp32_ms'] / row['int8_ms']:.2f}x |"
        )
    for cpu in emulated:
        exact = [r[f"fp32_native_vs_{cpu}"] for r in rows]
        lines += [
            "",
            f"The float32 exports agree between the native and the emulated {cpu} runs to a "
            f"cosine of at least {min(exact):.6f}.",
        ]
    if args.arm:
        lines += [
            "",
            "arm64: `qemu-aarch64` (Debian's qemu-user) running an arm64 Python 3.11 with "
            "onnxruntime's aarch64 wheel (its version is pinned in bench/arm64_sysroot.sh: "
            "1.32's crashes on import under this qemu).",
        ]
    argv = " ".join(sys.argv[1:])
    lines += [
        "",
        f"Re-run: `OMP_NUM_THREADS=1 PYTHONPATH=src python bench/int8_portability.py {argv}`",
    ]
    text = "\n".join(lines) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
