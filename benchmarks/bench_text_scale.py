"""Benchmark: clean -> normalise -> dedup on a generated corpus of short texts, at two sizes.

    .venv/bin/python benchmarks/bench_text_scale.py --docs 100000,1000000

For each size it writes, in a temporary folder, a TSV of seeded short texts (about 100
characters of words from a Zipf vocabulary, three labels) in which some rows are exact copies,
some are edited copies (near duplicates, 1 to 3 word edits), and some carry mojibake (UTF-8 read
as cp1252), C1 control characters, HTML entities or zero-width characters for clean to repair.
It then runs the real stages, `pipeline.stages.{clean,normalise,dedup}.main([...])`, one after
the other in ONE fresh process (default params, `engine.workers` 1, ledgers written), and
measures each stage's wall time and its peak resident set size (RSS).

Each size runs in its own child process, so the sizes do not share memory; the parent prints one
JSON object with, per size, seconds and docs/s per stage and in total, peak RSS per stage and for
the whole process (getrusage ru_maxrss), and the time ratio of the largest size to the smallest
against the size ratio (targets: peak RSS < 4 GB at 1M, time(1M) <= 12 x time(100k)).

Memory per stage: the kernel's peak (VmHWM) is reset through /proc/self/clear_refs before each
stage and read after it; where that is not allowed, ru_maxrss (the process peak so far) is used.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.seeding import rng  # noqa: E402
from measure import child_json, measured, status_kib  # noqa: E402

LABELS = ["billing", "shipping", "technical"]
LETTERS = list("abcdefghijklmnopqrstuvwxyz")
ACCENTED = ["café", "naïve", "résumé", "façade", "crème", "déjà", "señor", "über"]
TARGETS = {"max_peak_rss_gib_at_largest": 4.0, "max_time_ratio_for_10x_docs": 12.0}


# --- corpus ---------------------------------------------------------------------------------

def make_rows(docs: int, seed: int, near_rows: list[int] | None = None) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """(text, label) rows: originals, exact copies, near copies and rows needing repair. The row
    numbers (0-based) of the near copies go into `near_rows` when it is given."""
    gen = rng(seed, "bench-text-scale")
    vocab = _vocabulary(gen, 30_000)
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 0.9
    n_exact, n_near = docs // 10, docs // 10
    n_orig = docs - n_exact - n_near
    draws = gen.choice(len(vocab), size=(n_orig, 30), p=weights / weights.sum())
    targets = gen.integers(80, 121, size=n_orig)
    labels = gen.integers(0, len(LABELS), size=docs)
    texts = [_sentence(vocab, row, int(t)) for row, t in zip(draws, targets)]
    dirty = gen.random(n_orig) < 0.05  # a twentieth of the originals need a repair
    kinds = gen.integers(0, 4, size=n_orig)
    for i in np.flatnonzero(dirty).tolist():
        texts[i] = _dirty(texts[i], int(kinds[i]), gen)
    sources = gen.integers(0, n_orig, size=n_exact + n_near)
    texts += [texts[s] for s in sources[:n_exact].tolist()]
    texts += [_edit(texts[s], vocab, gen) for s in sources[n_exact:].tolist()]
    order = gen.permutation(docs)
    rows = [(texts[i], LABELS[labels[i]]) for i in order.tolist()]
    if near_rows is not None:
        near_rows.extend(np.flatnonzero(order >= n_orig + n_exact).tolist())
    planted = {"originals": n_orig, "exact_copies": n_exact, "near_copies": n_near, "needing_repair": int(dirty.sum())}
    return rows, planted


def _vocabulary(gen: np.random.Generator, size: int) -> list[str]:
    lengths = gen.integers(2, 10, size=size)
    letters = gen.choice(LETTERS, size=int(lengths.sum()))
    words = ["".join(part) for part in np.split(letters, np.cumsum(lengths)[:-1])]
    at = 400  # accented words are uncommon, not among the most frequent (about a tenth of texts hold one)
    return words[:at] + ACCENTED + words[at + len(ACCENTED):]


def _sentence(vocab: list[str], row: np.ndarray, target: int) -> str:
    words, length = [], -1
    for index in row.tolist():
        words.append(vocab[index])
        length += len(vocab[index]) + 1
        if length >= target:
            break
    return " ".join(words)


def _dirty(text: str, kind: int, gen: np.random.Generator) -> str:
    """A repair for clean: mojibake, a C1 quote, an HTML entity or a zero-width space."""
    words = text.split(" ")
    at = int(gen.integers(len(words)))
    if kind == 0:
        words[at] = (words[at] + " café").encode("utf-8").decode("cp1252", errors="replace")
    elif kind == 1:
        words[at] = words[at] + "\x92s"
    elif kind == 2:
        words[at] = words[at] + " &amp; co &#39;"
    else:
        words[at] = words[at][:1] + "\u200b" + words[at][1:]
    return " ".join(words)


def _edit(text: str, vocab: list[str], gen: np.random.Generator) -> str:
    """One to three word substitutions, deletions or insertions."""
    words = text.split(" ")
    for _ in range(int(gen.integers(1, 4))):
        at, kind = int(gen.integers(len(words))), int(gen.integers(3))
        if kind == 0:
            words[at] = vocab[int(gen.integers(len(vocab)))]
        elif kind == 1 and len(words) > 3:
            del words[at]
        else:
            words.insert(at, vocab[int(gen.integers(len(vocab)))])
    return " ".join(words)


def write_corpus(folder: Path, rows: list[tuple[str, str]]) -> Path:
    path = folder / "corpus.tsv"
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("text\tlabel\n")
        out.writelines(f"{text}\t{label}\n" for text, label in rows)
    return path


def write_params(folder: Path, source: Path) -> Path:
    """Default params, with one TSV dataset `bench` (labels declared)."""
    path = folder / "params.yaml"
    dataset = {"modality": "text", "source": str(source), "format": "tsv", "labels": LABELS}
    path.write_text(yaml.safe_dump({"datasets": {"bench": dataset}}, sort_keys=False))
    return path


# --- one size, in this process --------------------------------------------------------------

def run_size(docs: int, seed: int) -> dict[str, Any]:
    """Generate, write and run the three stages in this process; timings and memory per stage."""
    from pipeline.stages import clean, dedup, normalise

    with tempfile.TemporaryDirectory(prefix="bench_text_scale_") as tmp:
        folder = Path(tmp)
        rows, planted = make_rows(docs, seed)
        source = write_corpus(folder, rows)
        del rows
        params = write_params(folder, source)
        data, out = folder / "data", folder / "out"
        common = ["--dataset", "bench", "--params", str(params)]
        stages = {
            "clean": (clean.main, ["--output", str(data / "clean.parquet"), "--root", str(folder)]),
            "normalise": (normalise.main, ["--input", str(data / "clean.parquet"), "--output", str(data / "normalise.parquet")]),
            "dedup": (dedup.main, ["--input", str(data / "normalise.parquet"), "--output", str(data / "dedup.parquet")]),
        }
        report: dict[str, Any] = {"docs": docs, "planted": planted, "stages": {}}
        rss_before_stages = status_kib("VmRSS")
        for name, (main, args) in stages.items():
            argv = [*common, *args, "--metrics", str(out / f"{name}.json"), "--ledger", str(out / f"{name}.ledger.parquet")]
            code, seconds, peak, _ = measured(lambda: main(argv))
            if code != 0:
                raise SystemExit(f"stage {name} failed with exit code {code}")
            metrics = json.loads((out / f"{name}.json").read_text())
            report["stages"][name] = {
                "seconds": round(seconds, 2), "docs_per_s": round(metrics["in"] / seconds), "peak_rss_mib": peak,
                "in": metrics["in"], "out": metrics["out"], "merged": metrics["merged"], "dropped": metrics["dropped"],
                **({"repaired": metrics["repaired"]} if "repaired" in metrics else {}),
            }
        total = sum(s["seconds"] for s in report["stages"].values())
        report["seconds"] = round(total, 2)
        report["docs_per_s"] = round(docs / total)
        report["rss_before_stages_mib"] = round(rss_before_stages / 1024, 1)
        report["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return report


# --- the parent: one child per size ---------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", default="100000,1000000", help="comma-separated corpus sizes (default: 100000,1000000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--single", action="store_true", help="run one size in this process and print its JSON")
    args = parser.parse_args(argv)
    sizes = sorted(int(d) for d in args.docs.split(","))
    if args.single:
        print(json.dumps(run_size(sizes[0], args.seed)))
        return 0
    load_before = os.getloadavg()
    runs = [_child(size, args.seed) for size in sizes]
    report: dict[str, Any] = {"cpus": os.cpu_count(), "load_avg_1_5_15_before": [round(v, 2) for v in load_before],
                              "load_avg_1_5_15_after": [round(v, 2) for v in os.getloadavg()], "runs": runs}
    if len(runs) > 1:
        small, large = runs[0], runs[-1]
        ratio = large["seconds"] / small["seconds"]
        report["size_ratio"] = round(large["docs"] / small["docs"], 2)
        report["time_ratio"] = round(ratio, 2)
        report["time_ratio_by_stage"] = {name: round(large["stages"][name]["seconds"] / small["stages"][name]["seconds"], 2)
                                         for name in small["stages"]}
        report["targets"] = {
            "peak_rss_below_4gib": large["peak_rss_mib"] < TARGETS["max_peak_rss_gib_at_largest"] * 1024,
            "time_ratio_at_most_12": ratio <= TARGETS["max_time_ratio_for_10x_docs"] * large["docs"] / small["docs"] / 10,
        }
    report["memory"] = "peak RSS per stage: VmHWM reset via /proc/self/clear_refs (else ru_maxrss); peak_rss_mib: ru_maxrss of the child"
    print(json.dumps(report))
    return 0


def _child(docs: int, seed: int) -> dict[str, Any]:
    """Run one size in a fresh interpreter, so its peak memory is its own."""
    return child_json(__file__, ["--single", "--docs", str(docs), "--seed", str(seed)])


if __name__ == "__main__":
    raise SystemExit(main())
