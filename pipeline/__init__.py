"""Reproducible data preparation for fine-tuning corpora: clean, normalise, dedup, split,
augment, rebalance, then fine-tune and evaluate, as DVC stages."""

__version__ = "0.1.0"
