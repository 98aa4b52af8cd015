"""Optional ONNX export of a fine-tuned classifier, checked against torch on a batch of real records.

The TorchScript-based exporter (`dynamo=False`) needs only `onnx`; onnxruntime runs the check. The
batch and sequence axes are dynamic, so the file serves any batch of any text length.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

OPSET = 17
TOLERANCE = 1e-4


def export_and_check(model: Any, frame: pd.DataFrame, path: Path, *, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Write `model.net` to `path` as ONNX and compare onnxruntime's logits with torch's on `frame`.

    Raises ValueError when they differ by more than `tolerance`; returns what was checked.
    """
    import onnxruntime

    net = copy.deepcopy(model.net).cpu().float().eval()
    example = model.example(frame)
    names = list(model.input_names)
    axes = {name: {0: "batch", 1: "tokens"} if example[i].ndim == 2 else {0: "batch"} for i, name in enumerate(names)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(net, example, str(path), dynamo=False, input_names=names, output_names=["logits"],
                          dynamic_axes={**axes, "logits": {0: "batch"}}, opset_version=OPSET)
        expected = net(*example).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {name: tensor.numpy() for name, tensor in zip(names, example)})[0]
    difference = float(np.abs(got - expected).max()) if expected.size else 0.0
    if difference > tolerance:
        raise ValueError(f"{path}: ONNX logits differ from torch's by {difference:.3g} (> {tolerance}) on {len(frame)} records")
    return {"file": path.name, "opset": OPSET, "checked_records": len(frame), "max_abs_difference": round(difference, 9)}
