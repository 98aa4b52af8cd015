"""SMOTE on feature vectors: synthetic minority points for heads trained on embeddings (finetune's
linear probe). They are interpolations between neighbours, not records, so no dataset changes."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np

from pipeline.seeding import derive_seed


def smote_features(features: np.ndarray, labels: np.ndarray, *, ratio: float, neighbors: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature vectors and labels with SMOTE's synthetic minority points appended (originals first, unchanged).

    Each class below `ratio` x the largest gets new points up to that ratio; a class with fewer than
    two members cannot be interpolated and is left as it is. k is capped at the smallest such class.
    """
    from imblearn.over_sampling import SMOTE

    counts = Counter(labels.tolist())
    floor = math.ceil(ratio * max(counts.values()))
    wanted = {c: floor for c, n in counts.items() if n < floor and n >= 2}
    if not wanted:
        return features, labels
    k = min(neighbors, min(counts[c] for c in wanted) - 1)
    sampler = SMOTE(sampling_strategy=wanted, k_neighbors=k, random_state=derive_seed(seed, "smote", bits=32))
    x, y = sampler.fit_resample(features, labels)
    return np.asarray(x, dtype=features.dtype), np.asarray(y, dtype=labels.dtype)
