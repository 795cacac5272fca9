"""Identification with the enrollment store on real speech (issue 6): the figures of docs/usage.md.

The shipped model's 25 dev speakers (never heard in training), in the order the bundle lists
them: the first 5 are enrolled with their first 3 recordings each; all their other recordings are
genuine queries; the first 3 recordings of each of the other 20 speakers are impostor queries.
Each query goes to the store's best speaker mean and is accepted at a threshold: the bundle's
(the EER point of single-recording trials) and a stricter 0.55. Writes
docs/results/store_speechocean762.md.

    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/store_speechocean762.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from speakerprint.audio import load_audio
from speakerprint.inference import SpeakerEncoder
from speakerprint.inference.encoder import default_model_path
from speakerprint.inference.store import EnrollmentStore
from speakerprint.utils.io import atomic_write_text
from speakerprint.utils.machine import cpu_name

ENROLLED, ENROL_FILES, IMPOSTOR_FILES, STRICT = 5, 3, 3, 0.55
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "speechocean762" / "train"
OUT = ROOT / "docs" / "results" / "store_speechocean762.md"


def main() -> None:
    torch.set_num_threads(1)
    enc = SpeakerEncoder.from_pretrained()
    speakers = (default_model_path() / "dev_speakers.txt").read_text().split()
    files = {s: sorted((DATA / s).glob("*.opus")) for s in speakers}
    enrolled, others = speakers[:ENROLLED], speakers[ENROLLED:]
    with tempfile.TemporaryDirectory() as tmp:
        store = EnrollmentStore.open(
            Path(tmp) / "s.db",
            model_fingerprint=enc.fingerprint,
            embed_dim=enc.embed_dim,
            create=True,
        )
        for name in enrolled:
            chosen = files[name][:ENROL_FILES]
            store.enroll(
                name,
                enc.embed_batch([load_audio(f) for f in chosen]),
                sources=[str(f) for f in chosen],
                model_fingerprint=enc.fingerprint,
            )

        def best(path: Path):  # threshold -1: always the best speaker, with its score
            return store.identify(
                enc.embed(path), threshold=-1.0, model_fingerprint=enc.fingerprint, top_k=1
            )

        genuine = [(n, best(f)) for n in enrolled for f in files[n][ENROL_FILES:]]
        impostor = [best(f) for n in others for f in files[n][:IMPOSTOR_FILES]]
    threshold = enc.bundle.threshold.value
    ranked_first = sum(r.speaker == n for n, r in genuine)
    rows = []
    for name, t in ((f"bundle's ({enc.bundle.threshold.method})", threshold), ("strict", STRICT)):
        accepted = sum(r.speaker == n and r.score >= t for n, r in genuine)
        let_in = sum(r.score >= t for r in impostor)
        rows.append(
            f"| {name} | {t:.4f} | {accepted} of {len(genuine)} | {let_in} of {len(impostor)} "
            f"({100 * let_in / len(impostor):.0f}%) |"
        )
    text = "\n".join(
        [
            "# The enrollment store on speechocean762's held-out speakers",
            "",
            f"Shipped model, {ENROLLED} of its 25 unseen dev speakers enrolled with "
            f"{ENROL_FILES} recordings each (mean of unit embeddings); {len(genuine)} other "
            f"recordings of theirs as genuine queries, of which {ranked_first} ranked their own "
            f"speaker first; {IMPOSTOR_FILES} recordings of each of the other {len(others)} "
            "speakers as impostor queries.",
            "",
            "| threshold | value | genuine accepted as their speaker | impostors accepted |",
            "|---|---|---|---|",
            *rows,
            "",
            f"Machine: {cpu_name()}, torch {torch.__version__}, one thread. Reproduce: "
            "`OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/store_speechocean762.py`.",
            "",
        ]
    )
    atomic_write_text(OUT, text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
