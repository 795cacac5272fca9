"""``speakerprint export``: a bundle to ONNX (optionally int8) or TorchScript, with a sidecar JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from speakerprint.cli.app import MODEL_HELP, app, choose_model, clean_errors


@app.command("export")
@clean_errors
def export_cmd(
    model_arg: Annotated[str | None, typer.Argument(help=MODEL_HELP, metavar="MODEL")] = None,
    *,
    model: Annotated[str | None, typer.Option(help="The model, as MODEL")] = None,
    format_: Annotated[str, typer.Option("--format", help="onnx or torchscript")],
    out: Annotated[Path, typer.Option("--out", help="The model file (.onnx or .pt)")],
    with_features: Annotated[
        bool,
        typer.Option(
            "--with-features",
            help="Take waveforms (fbank inside the model) instead of fbank frames; needed for "
            "inference without torch",
        ),
    ] = False,
    quantize: Annotated[
        str | None,
        typer.Option(
            help="int8: int8 quantisation of the encoder (ONNX only); static with --calibration, "
            "else dynamic"
        ),
    ] = None,
    calibration: Annotated[
        list[Path] | None,
        typer.Option(
            help="Audio that calibrates static int8 (files, folders, manifests, wav.scp; "
            "repeatable): real speech like the model's, not the test set's"
        ),
    ] = None,
    calibration_utts: Annotated[
        int, typer.Option(help="Calibration utterances drawn (seed 0) from --calibration")
    ] = 64,
    calibration_seconds: Annotated[
        float, typer.Option(help="Each calibration utterance is cut to its first N seconds")
    ] = 10.0,
    int8_scheme: Annotated[
        str,
        typer.Option(
            help="Static int8 scheme: u8s7 (7-bit weights, exact on every x86 CPU) or u8u8 "
            "(also exact, slower)"
        ),
    ] = "u8s7",
    min_cosine: Annotated[
        float,
        typer.Option(
            help="Static int8 refuses (exit 2) when the int8 model's embedding of any "
            "calibration utterance has a cosine under this to the float model's"
        ),
    ] = 0.995,
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default 17)")] = None,
) -> None:
    """Export a bundle to ONNX or TorchScript; writes OUT and its sidecar OUT.json (sample rate,
    input kind, embedding size, the bundle's fingerprint and threshold)."""
    import tempfile

    from speakerprint.export import (
        DEFAULT_OPSET,
        export_onnx,
        export_torchscript,
        quantize_onnx_int8,
    )
    from speakerprint.hub import resolve_model
    from speakerprint.onnx_runtime import read_sidecar, sidecar_path

    _check_options(
        format_,
        quantize,
        calibration,
        calibration_utts=calibration_utts,
        calibration_seconds=calibration_seconds,
        int8_scheme=int8_scheme,
        min_cosine=min_cosine,
        opset=opset,
    )
    bundle = resolve_model(choose_model(model_arg, model))
    if format_ == "torchscript":
        export_torchscript(bundle, out, with_features=with_features)
    elif quantize is None:
        export_onnx(bundle, out, with_features=with_features, opset=opset or DEFAULT_OPSET)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            export_onnx(bundle, fp32, with_features=with_features, opset=opset or DEFAULT_OPSET)
            waves = None
            if calibration:
                waves = _calibration_audio(calibration, fp32, calibration_utts, calibration_seconds)
            quantize_onnx_int8(
                fp32, out, calibration=waves, scheme=int8_scheme, min_cosine=min_cosine
            )
    kind = "waveform" if with_features else "fbank features"
    typer.echo(
        f"wrote {out} ({format_}{_quantized(quantize, calibration)}, input: {kind}; "
        f"{out.stat().st_size / 1e6:.1f} MB) and {sidecar_path(out)}"
    )
    check = (read_sidecar(out).get("int8") or {}).get("check") if quantize else None
    if check:
        typer.echo(
            f"int8 check: cosine to the float model min {check['min_cosine']:.6f}, mean "
            f"{check['mean_cosine']:.6f} over {check['utterances']} calibration utterances "
            f"(floor {check['floor']})"
        )


def _check_options(
    format_: str,
    quantize: str | None,
    calibration: list[Path] | None,
    *,
    calibration_utts: int,
    calibration_seconds: float,
    int8_scheme: str,
    min_cosine: float,
    opset: int | None,
) -> None:
    """One line (exit 2) for an option export cannot take or that does nothing here."""
    from speakerprint.errors import ConfigError

    if format_ not in ("onnx", "torchscript"):
        raise ConfigError(f"--format must be onnx or torchscript, got {format_!r}")
    if quantize not in (None, "int8"):
        raise ConfigError(f"--quantize must be int8, got {quantize!r}")
    if quantize is not None and format_ != "onnx":
        raise ConfigError("--quantize int8 applies to --format onnx only")
    if not calibration and (int8_scheme != "u8s7" or min_cosine != 0.995):
        raise ConfigError("--int8-scheme and --min-cosine apply to static int8 (--calibration)")
    if calibration and quantize is None:
        raise ConfigError("--calibration applies to --quantize int8 only")
    if calibration_utts < 1 or calibration_seconds <= 0:
        raise ConfigError("--calibration-utts and --calibration-seconds must be positive")
    if opset is not None and format_ != "onnx":
        raise ConfigError("--opset applies to --format onnx only")


def _quantized(quantize: str | None, calibration: list[Path] | None) -> str:
    if quantize is None:
        return ""
    return ", int8 static" if calibration else ", int8 dynamic"


def _calibration_audio(inputs: list[Path], onnx_path: Path, count: int, seconds: float):
    """``count`` waveforms drawn with seed 0 from the inputs, each cut to ``seconds``."""
    import numpy as np

    from speakerprint.audio import load_audio
    from speakerprint.inference.extract import collect_inputs
    from speakerprint.onnx_runtime import read_sidecar

    items = collect_inputs(inputs)
    sample_rate = read_sidecar(onnx_path)["sample_rate"]
    picked = sorted(np.random.default_rng(0).permutation(len(items))[:count])
    typer.echo(f"calibrating on {len(picked)} of {len(items)} utterances", err=True)
    return [load_audio(items[i].path, sample_rate, duration_s=seconds) for i in picked]
