"""Embedding extraction over a manifest, cosine scoring of trials, and one evaluation run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import DataLoader
from tqdm import tqdm

from speakerprint.data.dataset import UtteranceDataset, collate_padded, length_sorted_batches
from speakerprint.data.manifest import Utterance
from speakerprint.data.trials import Trial, check_trials_against
from speakerprint.eval.metrics import VerificationMetrics, compute_verification_metrics
from speakerprint.eval.normalization import unit_rows
from speakerprint.models.bundle import Bundle


def embed_utterances(
    bundle: Bundle,
    utts: Sequence[Utterance],
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Full-length embeddings of every utterance, batched by similar length.

    Returns ``{utt_id: (embed_dim,) float32}``. The encoder's train/eval mode is restored after.
    """
    dataset = UtteranceDataset(utts, sample_rate=bundle.sample_rate)
    loader = DataLoader(
        dataset,
        batch_sampler=length_sorted_batches([u.duration_s for u in utts], batch_size),
        collate_fn=collate_padded,
        num_workers=num_workers,
    )
    was_training = bundle.encoder.training, bundle.fbank.training
    bundle.encoder.eval()
    bundle.fbank.eval()
    out: dict[str, np.ndarray] = {}
    try:
        for wav, lengths, indices in tqdm(
            loader, desc="embedding", unit="batch", disable=not progress, leave=False
        ):
            emb = bundle.embed_batch(wav, lengths).cpu().numpy()
            for row, i in enumerate(indices):
                out[utts[i].utt_id] = emb[row]
    finally:
        bundle.encoder.train(was_training[0])
        bundle.fbank.train(was_training[1])
    return out


def cosine_scores(embeddings: dict[str, np.ndarray], trials: Sequence[Trial]) -> np.ndarray:
    """Cosine similarity of each trial's enrolment and test embeddings, (num_trials,)."""
    ids = sorted(embeddings)
    index = {u: i for i, u in enumerate(ids)}
    matrix = unit_rows(np.stack([embeddings[u] for u in ids]).astype(np.float64))
    enrol = np.array([index[t.enrol] for t in trials])
    test = np.array([index[t.test] for t in trials])
    return np.einsum("nd,nd->n", matrix[enrol], matrix[test])


@dataclass
class EvalResult:
    metrics: VerificationMetrics
    scores: np.ndarray
    labels: np.ndarray

    def score_means(self) -> dict[str, float]:
        """Mean score of the target and of the non-target trials (Deep Speaker's SAP and SAN
        when the scores are cosine similarities of unseen speakers)."""
        return {
            "mean_target_score": float(self.scores[self.labels == 1].mean()),
            "mean_nontarget_score": float(self.scores[self.labels == 0].mean()),
        }


def evaluate(
    bundle: Bundle,
    utts: Sequence[Utterance],
    trials: Sequence[Trial],
    *,
    trials_path: str = "trials",
    batch_size: int = 16,
    num_workers: int = 0,
    p_target: float = 0.01,
    progress: bool = False,
) -> EvalResult:
    """Embed the utterances the trials use, score the trials, and compute EER and minDCF."""
    by_id = {u.utt_id: u for u in utts}
    check_trials_against(trials, by_id.keys(), trials_path)
    needed = sorted({t.enrol for t in trials} | {t.test for t in trials})
    embeddings = embed_utterances(
        bundle,
        [by_id[u] for u in needed],
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
    )
    scores = cosine_scores(embeddings, trials)
    labels = np.array([t.label for t in trials], dtype=np.int64)
    metrics = compute_verification_metrics(scores, labels, p_target=p_target)
    return EvalResult(metrics=metrics, scores=scores, labels=labels)
