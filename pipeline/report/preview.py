"""Previews for people: originals beside their variants, per class (a PNG grid, or a Markdown file)."""
from __future__ import annotations

import io

import pandas as pd
from PIL import Image, ImageDraw

PARENTS_PER_CLASS = 4
VARIANTS_PER_PARENT = 3
THUMB = 96


def pick_examples(originals: pd.DataFrame, variants: pd.DataFrame) -> list[tuple[str, pd.Series, pd.DataFrame]]:
    """(class, parent record, its variants) for the first parents by id of each class that have variants."""
    examples = []
    by_parent = {pid: group.sort_values("id") for pid, group in variants.groupby("parent_id")}
    for label, members in originals.sort_values("id").groupby("label", sort=True):
        chosen = [row for _, row in members.iterrows() if row["id"] in by_parent][:PARENTS_PER_CLASS]
        examples.extend((str(label), row, by_parent[row["id"]].head(VARIANTS_PER_PARENT)) for row in chosen)
    return examples


def preview_candidates(variants: pd.DataFrame) -> pd.DataFrame:
    """Of one partition of variants, those `pick_examples` could show: per class the first parents
    by id, each with its first variants (merged over partitions, they hold the whole set's)."""
    ordered = variants.sort_values(["label", "parent_id", "id"], kind="stable")
    parents = ordered.drop_duplicates("parent_id").groupby("label", sort=False).head(PARENTS_PER_CLASS)["parent_id"]
    chosen = ordered[ordered["parent_id"].isin(set(parents))]
    return chosen.groupby("parent_id", sort=False).head(VARIANTS_PER_PARENT).reset_index(drop=True)


def preview_files(originals: pd.DataFrame, variants: pd.DataFrame, *, modality: str) -> dict[str, bytes]:
    """The preview folder's one file: `preview.png` (images) or `samples.md` (texts), by name."""
    examples = pick_examples(originals, variants)
    if modality == "text":
        return {"samples.md": _markdown(examples).encode("utf-8")}
    buffer = io.BytesIO()
    _grid(examples).save(buffer, format="PNG", compress_level=6)
    return {"preview.png": buffer.getvalue()}


def _markdown(examples: list[tuple[str, pd.Series, pd.DataFrame]]) -> str:
    lines = ["# Augmentation samples", "", "Each original (train) with the variants made from it.", ""]
    if not examples:
        lines.append("No variants were generated (augment.text.variants is 0, or every variant was dropped).")
    current = None
    for label, parent, kids in examples:
        if label != current:
            lines += [f"## {label}", ""]
            current = label
        lines.append(f"- original `{parent['id']}`: {parent['text']!r}")
        lines.extend(f"  - variant `{k['id']}`: {k['text']!r}" for _, k in kids.iterrows())
    return "\n".join(lines) + "\n"


def _grid(examples: list[tuple[str, pd.Series, pd.DataFrame]]) -> Image.Image:
    label_width, pad = 120, 4
    columns = 1 + VARIANTS_PER_PARENT
    rows = max(1, len(examples))
    canvas = Image.new("RGB", (label_width + columns * (THUMB + pad), rows * (THUMB + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    if not examples:
        draw.text((pad, pad), "no variants generated", fill="black")
    for r, (label, parent, kids) in enumerate(examples):
        y = r * (THUMB + pad)
        draw.text((pad, y + THUMB // 2 - 12), f"{label}\noriginal | variants", fill="black")
        for c, blob in enumerate([parent["image"], *kids["image"]]):
            canvas.paste(_thumb(blob), (label_width + c * (THUMB + pad), y))
    return canvas


def _thumb(blob: bytes) -> Image.Image:
    with Image.open(io.BytesIO(blob)) as image:
        thumb = image.convert("RGB")
        thumb.thumbnail((THUMB, THUMB))
        return thumb
