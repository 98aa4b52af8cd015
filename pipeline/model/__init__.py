"""Model code: the offline pretrained classifiers and their embeddings, the training loop, the
baselines, the scores and where torch runs. Used by the features, finetune, baselines and
evaluate stages (and by rebalance for embedding-based cleaning)."""
