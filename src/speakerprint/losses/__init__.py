"""Training losses. The encoder, the classifier head and the margin are separate objects::

emb = encoder(feats, lengths)               # (B, D)
out = loss_fn(emb, labels)                  # head -> margin -> cross-entropy, or triplets
out.loss.backward()
"""

from speakerprint.losses.base import LossOutput, SpeakerLoss
from speakerprint.losses.classification import LOSS_NAMES, ClassificationLoss, build_loss
from speakerprint.losses.heads import CosineClassifier, LinearClassifier
from speakerprint.losses.margins import AdditiveAngularMargin, AdditiveMargin
from speakerprint.losses.triplet import MINING_NAMES, TripletLoss

__all__ = [
    "LOSS_NAMES",
    "MINING_NAMES",
    "AdditiveAngularMargin",
    "AdditiveMargin",
    "ClassificationLoss",
    "CosineClassifier",
    "LinearClassifier",
    "LossOutput",
    "SpeakerLoss",
    "TripletLoss",
    "build_loss",
]
