"""The catalog of public models: names that cannot collide, facts in every field, a converter for
every entry, and an error that says what to do for a model that is named but not pinned."""

from __future__ import annotations

import re

import pytest

from speakerprint.convert import SOURCES
from speakerprint.errors import ModelUnavailableError
from speakerprint.hub import CATALOG, find_model, resolve_model
from speakerprint.hub.catalog import DEFAULT_ALIAS

# The names the issue asks for, as users will type them.
ISSUE_ALIASES = [
    "wespeaker-resnet34",
    "titanet-large",
    "ecapa-voxceleb",
    "xvector-voxceleb",
    "campplus-zh",
    "campplus-voxceleb",
    "eres2netv2-zh",
    "resnet293-voxceleb",
    "resemblyzer",
]


def test_every_name_is_unique_whatever_the_case():
    names = [n.lower() for entry in CATALOG for n in entry.names] + [DEFAULT_ALIAS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("alias", ISSUE_ALIASES)
def test_the_issues_names_are_there(alias):
    entry = find_model(alias)
    assert entry is not None
    assert find_model(entry.hub_id or entry.alias) is entry
    assert find_model(f"  {alias.upper()} ") is entry


@pytest.mark.parametrize("entry", CATALOG, ids=lambda e: e.alias)
def test_every_entry_is_complete(entry):
    assert entry.source in SOURCES
    assert entry.files and all(f.name for f in entry.files)
    assert entry.config is None or entry.config in {f.name for f in entry.files}
    assert entry.embed_dim > 0 and entry.sample_rate == 16000 and entry.parameters > 0
    for text in (entry.architecture, entry.features, entry.training_data, entry.licence):
        assert text.strip()
    assert entry.published and entry.published_source
    if entry.pinned:
        assert all(re.fullmatch(r"[0-9a-f]{64}", f.sha256) for f in entry.files)
        assert entry.package or re.fullmatch(r"[0-9a-f]{40}", entry.revision)
    else:
        assert entry.download_page


def test_the_pinned_models_are_the_ones_with_published_digests():
    pinned = {e.alias for e in CATALOG if e.pinned}
    assert {"wespeaker-resnet34", "titanet-large", "ecapa-voxceleb", "resemblyzer"} <= pinned


@pytest.mark.parametrize("entry", [e for e in CATALOG if not e.pinned], ids=lambda e: e.alias)
def test_an_unpinned_model_says_where_to_get_it_and_never_downloads(entry, monkeypatch, tmp_path):
    monkeypatch.setenv("SPEAKERPRINT_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelUnavailableError) as info:
        resolve_model(entry.alias)
    message = str(info.value)
    assert entry.download_page in message and "pass that folder" in message
    for hub_file in entry.files:
        assert hub_file.name in message
    assert not any(tmp_path.iterdir())
