"""CPU inference speed: real-time factor of eager torch, ONNX fp32 and int8, features included.

Real-time factor = wall time / audio duration (lower is faster; 0.01 means 100x real time), for
one utterance per call, random weights from the registered factories, the fbank inside every path.
Each cell: ``--warmup`` untimed calls, then ``--iterations`` timed ones; the table gives the median
and the interquartile range. Run it on an otherwise idle machine; figures from a busy CPU are not
worth quoting.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/cpu_inference.py --out bench/cpu_inference.md
    PYTHONPATH=src python bench/cpu_inference.py --models ecapa_tdnn_c512 --durations 3 \\
        --threads 1 --iterations 2      # a quick check that it runs
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from _calibration import calibration_waveforms

from speakerprint.export import export_onnx, quantize_onnx_int8
from speakerprint.features import Fbank, FbankConfig
from speakerprint.models import create_model
from speakerprint.utils.io import atomic_write_text
from speakerprint.utils.machine import cpu_name

DEFAULT_MODELS = ["ecapa_tdnn_c512", "ecapa_tdnn_c1024", "titanet_s", "resnet34"]
SAMPLE_RATE = 16000


def _timings(fn, warmup: int, iterations: int) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return np.array(out)


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--durations", nargs="+", type=float, default=[3.0, 10.0, 60.0])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="Also write the table here")
    args = parser.parse_args()

    rows = []
    calibration, calibration_source = calibration_waveforms()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            torch.manual_seed(0)
            model = create_model(name).eval()
            fbank = Fbank(FbankConfig(num_mel_bins=model.feat_dim)).eval()
            fp32 = export_onnx(
                model, Path(tmp) / f"{name}.onnx", with_features=True, fbank_config=fbank.config
            )
            dynamic = quantize_onnx_int8(fp32, Path(tmp) / f"{name}.dyn.onnx")
            static = quantize_onnx_int8(
                fp32, Path(tmp) / f"{name}.static.onnx", calibration=calibration
            )
            for threads in args.threads:
                torch.set_num_threads(threads)
                sessions = {
                    "onnx fp32": _session(fp32, threads),
                    "onnx int8 dynamic": _session(dynamic, threads),
                    "onnx int8 static": _session(static, threads),
                }
                for seconds in args.durations:
                    n = int(seconds * SAMPLE_RATE)
                    wav = 0.1 * torch.randn(1, n, generator=torch.Generator().manual_seed(1))
                    lengths = torch.tensor([n])
                    feeds = {"wav": wav.numpy(), "lengths": lengths.numpy()}

                    @torch.no_grad()
                    def eager(wav=wav, lengths=lengths, model=model, fbank=fbank):
                        return model(*fbank(wav, lengths))

                    runners = {"eager torch": eager}
                    for kind, session in sessions.items():
                        runners[kind] = lambda s=session, f=feeds: s.run(None, f)
                    for kind, fn in runners.items():
                        rtf = _timings(fn, args.warmup, args.iterations) / seconds
                        q1, median, q3 = np.percentile(rtf, [25, 50, 75])
                        rows.append(
                            f"| {name} | {threads} | {seconds:g} s | {kind} | {median:.4f} | "
                            f"{q3 - q1:.4f} |"
                        )
                        print(rows[-1], flush=True)
    table = "\n".join(
        [
            "| model | threads | utterance | runtime | RTF median | RTF IQR |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Machine: {cpu_name()} ({platform.machine()}), torch {torch.__version__}, "
            f"onnxruntime {ort.__version__}; random weights, features included, one utterance "
            f"per call, {args.warmup} warm-up and {args.iterations} timed calls per cell; "
            f"static int8 calibrated on {calibration_source}.",
        ]
    )
    print()
    print(table)
    if args.out is not None:
        atomic_write_text(args.out, table + "\n")


if __name__ == "__main__":
    main()
