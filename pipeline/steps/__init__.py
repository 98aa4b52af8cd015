"""Data steps: pure functions over records (pandas in, pandas out) that clean, normalise,
deduplicate, split, augment and rebalance. No paths, no DVC, no printing; a stage reads, calls
them and writes."""
