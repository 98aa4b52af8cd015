"""Optional ONNX export of a fine-tuned classifier, checked against torch on a batch of real records.

The TorchScript-based exporter (`dynamo=False`) needs only `onnx`; onnxruntime runs the check. The
batch and sequence axes are dynamic, so the file serves any batch of any text length. The model is
exported to bytes; the stage writes them.
"""
from __future__ import annotations

import copy
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.errors import ExportError

OPSET = 17
TOLERANCE = 1e-4
FILE = "model.onnx"


@dataclass(slots=True, frozen=True)
class Exported:
    """The ONNX file's bytes and what its check found (for the metrics and the model card)."""

    data: bytes
    report: dict[str, Any]


def export_and_check(model: Any, frame: pd.DataFrame, *, tolerance: float = TOLERANCE) -> Exported:
    """`model.net` as ONNX, with onnxruntime's logits compared with torch's on `frame`.

    Raises ExportError when onnx or onnxruntime is missing, or the logits differ by more than
    `tolerance`.
    """
    try:
        import onnx  # noqa: F401 (the exporter needs it)
        import onnxruntime
    except ImportError as exc:
        raise ExportError(f"finetune.onnx needs the onnx and onnxruntime packages ({exc.name} is missing)") from None
    net = copy.deepcopy(model.net).cpu().float().eval()
    example = model.example(frame)
    names = list(model.input_names)
    axes = {name: {0: "batch", 1: "tokens"} if example[i].ndim == 2 else {0: "batch"} for i, name in enumerate(names)}
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(net, example, buffer, dynamo=False, input_names=names, output_names=["logits"],
                          dynamic_axes={**axes, "logits": {0: "batch"}}, opset_version=OPSET)
        expected = net(*example).numpy()
    data = buffer.getvalue()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(None, {name: tensor.numpy() for name, tensor in zip(names, example)})[0]
    difference = float(np.abs(got - expected).max()) if expected.size else 0.0
    if difference > tolerance:
        raise ExportError(f"{FILE}: ONNX logits differ from torch's by {difference:.3g} (> {tolerance}) on {len(frame)} "
                          "records; set finetune.onnx to false to skip the export")
    return Exported(data, {"file": FILE, "opset": OPSET, "checked_records": len(frame), "max_abs_difference": round(difference, 9)})
