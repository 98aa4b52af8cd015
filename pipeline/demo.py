"""Demo corpora generated offline, built to exercise every stage.

Text: short customer messages in three imbalanced topics, as TSV, with exact and near duplicates,
whitespace and case variants, a label conflict, label spellings to canonicalise, mojibake, C1
controls, HTML entities, and broken rows (ragged, empty text, missing or unknown label). Beside
them, metadata columns as a ticket system exports them (`channel`, `replies`, `confidence`,
`created`) with blanks, outliers, low annotator confidence and a date that does not parse, so the
metadata filters and the `prepare` stage have something to do.

Images: coloured shapes in three imbalanced classes, as an image folder, in several formats and
modes, with an exact duplicate saved in two formats, near duplicates, a folder whose name needs
mapping, a tiny image, a truncated file, an empty file, a text file posing as an image, a hidden
file and a stray file at the wrong depth.

Everything is drawn from generators keyed on the seed, so the bytes are the same on every run.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.seeding import rng

TOPICS = {
    "billing": (0.55, ["invoice", "refund", "charge", "payment", "subscription", "receipt", "card", "price"],
                ["I was charged twice for my {n}", "Please send the {n} for last month", "Why is my {n} higher than usual",
                 "The {n} failed again this morning", "Can I get a refund on the {n}", "My {n} shows the wrong amount"]),
    "shipping": (0.30, ["parcel", "delivery", "courier", "package", "tracking number", "order", "address", "box"],
                 ["Where is my {n}, it is late", "The {n} arrived damaged", "Can you change the {n} for my delivery",
                  "My {n} has not moved for days", "The {n} was left at the wrong door", "I never received the {n}"]),
    "technical": (0.15, ["app", "login", "password", "screen", "update", "sync", "browser", "router"],
                  ["The {n} crashes when I open it", "I cannot reset my {n}", "After the {n} nothing works",
                   "The {n} freezes on start", "Error code 500 when the {n} loads", "My {n} keeps logging me out"]),
}
# Context sentences shared by all topics, some naming another topic's things, so a message is
# not classified by one keyword and two messages rarely share more than their complaint.
CONTEXT = [
    "I ordered a new router last week.", "My card was renewed in March.", "The parcel before this one was fine.",
    "I moved to a new flat recently.", "My account is under my partner's name.", "I use the app on an old phone.",
    "This is the third time I write.", "Your chat line was closed yesterday.", "I work nights, email is best.",
    "The invoice number is on the receipt.", "My neighbour had the same problem.", "I paid with a gift voucher.",
    "The courier said to contact you.", "I changed my password on Monday.", "The box was very light.",
    "I am travelling until Friday.", "My plan is the family subscription.", "The screen showed a red banner.",
    "I bought it as a present.", "Your website was very slow today.", "",
]
OPENERS = ["Hello,", "Hi team,", "Good morning.", "Hey,", "Dear support,", ""]
CLOSERS = ["Thanks.", "Please help.", "Regards, Sam", "Cheers", "Any update?", "This is urgent!", ""]
LABEL_SPELLINGS = {"billing": ["billing", "Billing", " BILLING ", "bill"], "shipping": ["shipping", "Shipping", "ship"],
                   "technical": ["technical", "Technical", "tech support"]}


def demo_texts(n: int, seed: int) -> list[tuple[str, str]]:
    """(label, text) rows: clean originals first, then the planted problems."""
    gen = rng(seed, "demo", "text")
    names = list(TOPICS)
    weights = np.array([TOPICS[t][0] for t in names])
    rows = []
    for i in range(n):
        topic = names[gen.choice(len(names), p=weights / weights.sum())]
        _, nouns, templates = TOPICS[topic]
        body = templates[gen.integers(len(templates))].format(n=nouns[gen.integers(len(nouns))])
        parts = (OPENERS[gen.integers(len(OPENERS))], CONTEXT[gen.integers(len(CONTEXT))], body + ".",
                 CONTEXT[gen.integers(len(CONTEXT))], CLOSERS[gen.integers(len(CLOSERS))])
        text = " ".join(p for p in parts if p)
        text = f"{text} (order {gen.integers(10_000, 99_999)})" if gen.random() < 0.6 else text
        label = names[gen.integers(len(names))] if gen.random() < 0.03 else topic  # 3% label noise, as in real data
        spelling = LABEL_SPELLINGS[label]
        rows.append((spelling[gen.integers(len(spelling))] if gen.random() < 0.15 else label, text))
    return rows + _text_problems(rows, gen)


def _text_problems(rows: list[tuple[str, str]], gen: np.random.Generator) -> list[tuple[str, str]]:
    picks = [rows[int(i)] for i in gen.choice(len(rows), size=min(len(rows), 40), replace=False)]
    extra = [(label, text) for label, text in picks[:20]]                            # exact duplicates
    extra += [(label, "  " + text.replace(" ", "   ", 2) + " ") for label, text in picks[20:26]]  # whitespace variants
    extra += [(label, text.replace(".", "!", 1) + " Thank you") for label, text in picks[26:32]]  # near duplicates
    conflict = picks[32]
    extra.append(("shipping" if conflict[0] != "shipping" else "billing", conflict[1]))  # label conflict
    extra += [
        ("billing", "I can\x92t see the refund on my card\x85 please check."),      # C1 controls (cp1252 read as Latin-1)
        ("shipping", "The parcel isnâ€™t here yet, itâ€™s been a week."),            # mojibake
        ("billing", "Price was &pound;20 &amp; now it&#39;s &pound;25?"),         # HTML entities
        ("technical", "The app shows &lt;#&gt; instead of my name"),
        ("technical", "Ｔｈｅ ｒｏｕｔｅｒ ｕｐｄａｔｅ ｆａｉｌｅｄ again."),              # full-width (NFKC folds it)
    ]
    return extra


METADATA_COLUMNS = ("channel", "replies", "confidence", "created")
CHANNELS = (("web", 0.45), ("email", 0.30), ("phone", 0.15), ("chat", 0.10))


def demo_metadata(n: int, seed: int) -> list[tuple[str, str, str, str]]:
    """(channel, replies, confidence, created) strings for `n` rows, from their own generator so the
    texts do not depend on them. Planted: about 5% blank channels, 4% blank reply counts, 1% reply
    counts far above the rest, 5% annotator confidences below 0.5, and one date that does not parse."""
    gen = rng(seed, "demo", "metadata")
    names, weights = zip(*CHANNELS)
    start = np.datetime64("2024-01-01T00:00:00")
    rows = []
    for i in range(n):
        channel = "" if gen.random() < 0.05 else names[gen.choice(len(names), p=np.array(weights))]
        draw = gen.random()
        replies = "" if draw < 0.04 else str(gen.integers(200, 900) if draw > 0.99 else gen.poisson(1.5))
        confidence = f"{gen.uniform(0.2, 0.5) if gen.random() < 0.05 else gen.beta(8, 2) * 0.5 + 0.5:.2f}"
        when = start + np.timedelta64(int(gen.integers(0, 366 * 24 * 3600)), "s")
        created = "2024-13-45 09:00:00" if i == n // 2 else str(when).replace("T", " ")
        rows.append((channel, replies, confidence, created))
    return rows


def write_text_demo(folder: Path, n: int, seed: int) -> Path:
    """Write `corpus.tsv` (header `label<TAB>text<TAB>` and the metadata columns, no quoting) with its
    broken rows; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = demo_texts(n, seed)
    metadata = demo_metadata(len(texts) + 3, seed)
    lines = ["\t".join(("label", "text", *METADATA_COLUMNS))]
    lines += ["\t".join((label, text, *extra)) for (label, text), extra in zip(texts, metadata)]
    broken = [("billing", "   "),                                  # whitespace-only text
              ("", "My invoice is wrong, nobody labelled this"),  # missing label
              ("sales", "Can I buy ten more seats?")]             # label outside the declared set
    lines += ["\t".join((label, text, *extra)) for (label, text), extra in zip(broken, metadata[len(texts):])]
    lines += [
        "shipping\tThe box\tarrived open\tweb\t1\t0.90\t2024-05-01 10:00:00",  # ragged: an extra tab
        "technical",                                                             # ragged: no text column
    ]
    path = folder / "corpus.tsv"
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    return path


# --- images ---------------------------------------------------------------------------------

SHAPES = {"circle": 0.5, "square": 0.32, "triangle": 0.18}


def _background(size: int, gen: np.random.Generator) -> Image.Image:
    """A light two-colour gradient in a random direction, with noise and a few random strokes.

    Scenes differ in their low frequencies too, so unrelated pictures are far apart by
    perceptual hash, as real photos are.
    """
    start, end = (gen.integers(40, 256, 3) for _ in range(2))
    angle = gen.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[:size, :size] / max(1, size - 1)
    ramp = np.clip(0.5 + (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle), 0, 1)[..., None]
    pixels = start * (1 - ramp) + end * ramp + gen.integers(-12, 13, (size, size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(5):
        x0, y0, x1, y1 = (int(v) for v in gen.integers(0, size, 4))
        draw.line((x0, y0, x1, y1), fill=tuple(int(v) for v in gen.integers(0, 256, 3)), width=int(gen.integers(2, 7)))
    return image


def draw_shape(shape: str, size: int, gen: np.random.Generator) -> Image.Image:
    """One RGB picture of `shape` in a random colour, place and size, on a random textured background."""
    image = _background(size, gen)
    draw = ImageDraw.Draw(image)
    colour = tuple(int(v) for v in gen.integers(0, 130, 3))
    r = int(size * gen.uniform(0.2, 0.35))
    cx, cy = (int(v) for v in gen.integers(r + 2, size - r - 2, 2))
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return image


def _save(image: Image.Image, path: Path, fmt: str, **options: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    path.write_bytes(buffer.getvalue())


FORMATS = [("png", "PNG", {}), ("jpg", "JPEG", {"quality": 92}), ("webp", "WEBP", {"lossless": True}),
           ("bmp", "BMP", {}), ("gif", "GIF", {})]


def write_image_demo(folder: Path, n: int, size: int, seed: int) -> Path:
    """Write an image folder `folder/<label>/<file>` with its planted problems; return `folder`."""
    gen = rng(seed, "demo", "image")
    names = list(SHAPES)
    weights = np.array(list(SHAPES.values()))
    kept: list[tuple[str, Image.Image]] = []
    for i in range(n):
        shape = names[gen.choice(len(names), p=weights / weights.sum())]
        image = draw_shape(shape, size, gen)
        ext, fmt, options = FORMATS[i % len(FORMATS)]
        image = image.convert("P", palette=Image.Palette.ADAPTIVE) if fmt == "GIF" else image
        label_dir = "Circles" if shape == "circle" and i % 23 == 0 else shape  # a folder spelling to map
        _save(image, folder / label_dir / f"{shape}_{i:04d}.{ext}", fmt, **options)
        kept.append((shape, image.convert("RGB")))
    _image_problems(folder, kept, size, gen)
    return folder


def _image_problems(folder: Path, kept: list[tuple[str, Image.Image]], size: int, gen: np.random.Generator) -> None:
    shape, image = kept[0]
    _save(image, folder / shape / "copy_of_first.png", "PNG")                      # exact duplicate, other format
    _save(image, folder / shape / "copy_of_first.bmp", "BMP")
    for k in range(1, 6):                                                          # near duplicates (re-encoded)
        shape_k, image_k = kept[k]
        _save(image_k, folder / shape_k / f"near_{k}.jpg", "JPEG", quality=70)
    rgba = kept[6][1].convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 160))
    _save(rgba, folder / kept[6][0] / "translucent.png", "PNG")                     # alpha channel
    _save(kept[7][1].convert("L"), folder / kept[7][0] / "grey.png", "PNG")         # grayscale
    _save(Image.new("RGB", (8, 8), (200, 60, 60)), folder / "square" / "tiny.png", "PNG")  # too small
    png = io.BytesIO()
    draw_shape("triangle", size, gen).save(png, format="PNG")
    (folder / "triangle" / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    (folder / "circle" / "empty.jpg").write_bytes(b"")
    (folder / "square" / "notes.jpg").write_bytes(b"this is a text file, not a JPEG\n")
    (folder / "square" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "README.txt").write_text("Demo shapes, generated by pipeline.demo.\n")
    (folder / "circle" / "labels.csv").write_text("not,an,image\n")
