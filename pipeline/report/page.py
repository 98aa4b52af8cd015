"""The data report: one self-contained HTML page per dataset (images and charts embedded).

`render` turns a `ReportInputs` into HTML; every section has a stable id (summary, gates, flow,
classes, duplicates, quality, augmentation, split, metadata (with metadata columns), projection, tokens (texts
only), training, params) so tests and people can find it.
"""
from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from pipeline.report import plots
from pipeline.report.gates import Gate
from pipeline.report.metadata import (
    MetadataInputs,
    counts,
    number,
    policies,
    statistics,
)
from pipeline.report.projection import Projection

STAGE_ORDER = ("clean", "normalise", "dedup", "semantic", "label_issues", "split", "prepare", "augment", "rebalance", "finetune", "evaluate")
SPLITS = ("train", "val", "test")
MANY_CLASSES = 12  # above it, classes run down the page (heatmap, tables with a row per class)
CHART_CLASSES = 80  # classes drawn in the class heatmap at most
CONFUSED_PAIRS = 15  # most frequent (true, predicted) mistakes listed under the confusion matrix
TOKEN_CLASS_ROWS = 20  # classes shown per split in the token table; the metrics hold them all
TOKEN_COLUMNS = ("count", "mean", "p50", "p90", "p99", "max")
FEATURES_SHOWN = 100  # feature names listed in the metadata section; prepare's metrics hold them all
SELECTION_ROWS = 25  # features with their selection scores shown; selection.json holds them all
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:2px solid #ddd;padding-bottom:.3rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem} td,th{border:1px solid #ccc;padding:.25rem .55rem;text-align:left}
th{background:#f3f3f3} .ok{color:#1a7f37;font-weight:600} .bad{color:#c62828;font-weight:700}
.pair{display:flex;gap:1rem;align-items:flex-start;margin:.5rem 0;padding:.4rem;border:1px solid #eee}
.pair div{flex:1} .muted{color:#666;font-size:.85rem} img.chart{max-width:100%} img.thumb{width:96px;height:96px;object-fit:cover}
pre{background:#f7f7f7;padding:.6rem;overflow-x:auto;font-size:.8rem} code{font-size:.85rem}
"""


@dataclass(slots=True)
class Example:
    """A record shown in the report: its id, label, and text or image bytes."""

    id: str
    label: str
    text: str | None = None
    image: bytes | None = None


@dataclass(slots=True)
class ReportInputs:
    """Everything the report shows, already loaded."""

    dataset: str
    modality: str
    card: dict[str, Any]
    leakage: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    gates: list[Gate]
    class_phases: dict[str, dict[str, int]]
    duplicates: list[tuple[str, str, Example, Example]] = field(default_factory=list)  # (reason, detail, merged, survivor)
    conflicts: list[tuple[str, Example, Example]] = field(default_factory=list)
    neighbours: list[tuple[str, str, Example, Example]] = field(default_factory=list)  # (reason, detail, record, neighbour)
    flagged: list[tuple[str, str, Example]] = field(default_factory=list)  # (flag, detail, record)
    contaminating: list[tuple[str, str, Example]] = field(default_factory=list)  # (contaminates:<set>, detail, record)
    preview_png: bytes | None = None
    preview_text: str | None = None
    projection: Projection | str = "No projection: no embeddings were given."  # a text says why there is none
    metadata: MetadataInputs | None = None  # None: the dataset declares no metadata columns


def render(inputs: ReportInputs) -> str:
    """The whole page."""
    sections = [_summary(inputs), _gates(inputs.gates), _flow(inputs), _classes(inputs), _duplicates(inputs),
                _quality(inputs), _augmentation(inputs), _split(inputs), _metadata(inputs), _projection(inputs), _tokens(inputs),
                _training(inputs), _params(inputs)]
    title = f"Data report: {html.escape(inputs.dataset)}"
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{STYLE}</style></head><body><h1>{title}</h1>{''.join(sections)}</body></html>\n")


# --- building blocks ------------------------------------------------------------------------

def _section(key: str, heading: str, body: str) -> str:
    return f"<section id='{key}'><h2>{html.escape(heading)}</h2>{body}</section>"


class Markup(str):
    """HTML this module made itself, put in a table as it is; every other cell is escaped (labels,
    ids and reasons come from the corpus: a label such as `<script>` must stay text)."""


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, Markup) else html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: bytes, alt: str, css: str = "chart") -> str:
    return f"<img class='{css}' alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _thumb(blob: bytes) -> bytes:
    with Image.open(io.BytesIO(blob)) as image:
        small = image.convert("RGB")
        small.thumbnail((96, 96))
        buffer = io.BytesIO()
        small.save(buffer, format="PNG")
        return buffer.getvalue()


def _example(example: Example) -> str:
    if example.image is not None:
        content = _img(_thumb(example.image), example.id, "thumb")
    else:
        content = html.escape((example.text or "")[:300])
    return f"<div>{content}<div class='muted'>{html.escape(example.label)} · <code>{html.escape(example.id)}</code></div></div>"


# --- sections -------------------------------------------------------------------------------

def _summary(inputs: ReportInputs) -> str:
    card = inputs.card
    rows = [["dataset", inputs.dataset], ["modality", inputs.modality], ["version", Markup(f"<code>{html.escape(card.get('version', ''))}</code>")]]
    rows += [[f"{split} records", n] for split, n in card.get("records", {}).items()]
    rows += [[f"{split} generated", n] for split, n in card.get("generated", {}).items()]
    violated = sum(not g.passed for g in inputs.gates)
    verdict = f"<span class='bad'>{violated} gate(s) violated</span>" if violated else "<span class='ok'>all gates pass</span>"
    return _section("summary", "Summary", f"<p>{verdict}</p>" + _table(["", "value"], rows))


def _gates(gates: list[Gate]) -> str:
    rows = [[g.name, g.where, g.value, g.threshold, Markup("<span class='ok'>pass</span>" if g.passed else "<span class='bad'>VIOLATED</span>")]
            for g in gates]
    return _section("gates", "Quality gates", _table(["gate", "where", "value", "threshold", "verdict"], rows) if rows else "<p>No gates configured.</p>")


def _flow(inputs: ReportInputs) -> str:
    stages = [s for s in STAGE_ORDER if s in inputs.metrics]
    counts = {s: {k: (sum(v.values()) if isinstance(v, dict) else v) for k, v in inputs.metrics[s].items() if k in plots.FLOW} for s in stages}
    rows = [[s, *(counts[s].get(k, 0) for k in plots.FLOW)] for s in stages]
    reasons = [[s, reason, n] for s in stages for reason, n in sorted(inputs.metrics[s].get("dropped", {}).items())]
    body = _img(plots.record_flow(stages, counts), "records through the stages") + _table(["stage", *plots.FLOW], rows)
    body += "<h3>Drop reasons</h3>" + (_table(["stage", "reason", "records"], reasons) if reasons else "<p>No record was dropped.</p>")
    return _section("flow", "Records through the stages", body)


def _classes(inputs: ReportInputs) -> str:
    phases = inputs.class_phases
    labels = sorted({label for counts in phases.values() for label in counts})
    if len(labels) <= MANY_CLASSES:
        rows = [[phase, *(counts.get(label, 0) for label in labels)] for phase, counts in phases.items()]
        body = _img(plots.class_distribution(phases), "class distribution") + _table(["phase", *labels], rows)
        return _section("classes", "Class distribution", body)
    return _section("classes", "Class distribution", _many_classes(phases, labels))


def _many_classes(phases: dict[str, dict[str, int]], labels: list[str]) -> str:
    """Tens of classes: a heatmap (classes down, phases across) and the table the same way round,
    largest class first by the last phase; past `CHART_CLASSES` the chart keeps both ends."""
    last = list(phases.values())[-1]
    ordered = sorted(labels, key=lambda label: (-last.get(label, 0), label))
    shown = ordered if len(ordered) <= CHART_CLASSES else ordered[:CHART_CLASSES // 2] + ordered[-(CHART_CLASSES // 2):]
    note = (f"<p class='muted'>{len(labels)} classes, largest first by {html.escape(list(phases)[-1])}"
            + (f"; the chart shows the {CHART_CLASSES // 2} largest and the {CHART_CLASSES // 2} smallest, the table all of them"
               if len(shown) < len(ordered) else "") + ".</p>")
    rows = [[label, *(phases[phase].get(label, 0) for phase in phases)] for label in ordered]
    return note + _img(plots.class_heatmap(phases, shown), "records per class and phase") + _table(["class", *phases], rows)


def _duplicates(inputs: ReportInputs) -> str:
    dedup = inputs.metrics.get("dedup", {})
    intro = (f"<p>{dedup.get('merged', 0)} records merged: {dedup.get('clusters', 0)} exact clusters, "
             f"{dedup.get('near_clusters', 0)} near-duplicate clusters; {dedup.get('label_conflicts', 0)} label conflicts; "
             f"{dedup.get('groups_of_similar_records', 0)} groups of similar records kept together by the split.</p>")
    pairs = "".join(f"<div class='pair'>{_example(merged)}{_example(survivor)}<div class='muted'>{html.escape(reason)}"
                    f"<br>{html.escape(detail or '')}<br>merged (left) into survivor (right)</div></div>"
                    for reason, detail, merged, survivor in inputs.duplicates)
    conflicts = "".join(f"<div class='pair'>{_example(a)}{_example(b)}<div class='muted'>{html.escape(reason)}</div></div>"
                        for reason, a, b in inputs.conflicts)
    shown = _shown(len(inputs.duplicates), dedup.get("merged", 0), "merged records")
    body = intro + shown + (pairs or "<p>No duplicates.</p>") + "<h3>Label conflicts</h3>"
    body += _shown(len(inputs.conflicts), dedup.get("label_conflicts", 0), "label conflicts") + (conflicts or "<p>None.</p>")
    body += _semantic(inputs.metrics.get("semantic"), inputs.neighbours)
    body += _contamination(dedup.get("decontaminated"), inputs.contaminating)
    return _section("duplicates", "Duplicate clusters", body)


def _semantic(metrics: dict | None, examples: list[tuple[str, str, Example, Example]]) -> str:
    """The semantic stage: its pairs, what they did, and example pairs."""
    if not metrics:
        return ""
    if metrics.get("threshold") is None:
        return "<h3>Semantic neighbours</h3><p>Off (dedup.semantic.threshold is null).</p>"
    done = (f"{metrics.get('merged', 0)} records merged in {metrics.get('clusters', 0)} clusters "
            f"({metrics.get('label_conflicts', 0)} label conflicts)" if metrics.get("action") == "merge" else "all kept")
    intro = (f"<p>{metrics.get('pairs', 0)} pairs of records whose embeddings' cosine is {metrics['threshold']} or more: {done}; "
             f"{metrics.get('records_regrouped', 0)} records moved into a neighbour's group ({metrics.get('groups_joined', 0)} groups "
             f"joined, the largest now {metrics.get('largest_joined_group', 0)} records), so the split keeps neighbours on one side.</p>")
    pairs = "".join(f"<div class='pair'>{_example(a)}{_example(b)}<div class='muted'>{html.escape(reason)}<br>"
                    f"{html.escape(detail or '')}</div></div>" for reason, detail, a, b in examples)
    return "<h3>Semantic neighbours</h3>" + intro + _shown(len(examples), metrics.get("pairs", 0), "pairs") + (pairs or "<p>None.</p>")


def _quality(inputs: ReportInputs) -> str:
    flagged = sum((Counter(inputs.metrics.get(stage, {}).get("flagged", {})) for stage in ("clean", "normalise", "label_issues")), Counter())
    repaired = inputs.metrics.get("clean", {}).get("repaired", {})
    rows = [[name, n] for name, n in sorted(flagged.items())]
    body = (_table(["flag", "records kept with it"], rows) if rows else "<p>No record was flagged.</p>")
    limits = inputs.metrics.get("normalise", {}).get("quality_limits", {})
    if limits:
        body += "<h3>Limits relative to this corpus</h3>" + _table(
            ["check", "measure", "Q1", "Q3", "fence", "absolute limit", "limit applied"],
            [[name, d["measure"], d["q1"], d["q3"], d["fence"], d["absolute"], d["applied"]] for name, d in sorted(limits.items())])
    if repaired:
        body += "<h3>Text repairs</h3>" + _table(["repair", "texts changed"], [[k, v] for k, v in sorted(repaired.items())])
    body += _shown(len(inputs.flagged), sum(flagged.values()), "flags")
    body += "".join(f"<div class='pair'>{_example(ex)}<div class='muted'>{html.escape(flag)}: {html.escape(detail or '')}</div></div>"
                    for flag, detail, ex in inputs.flagged)
    return _section("quality", "Quality flags and repairs", body)


def _contamination(counts: dict[str, int] | None, examples: list[tuple[str, str, Example]]) -> str:
    """Records dropped for copying an evaluation set: per set, and examples with what they copy."""
    if counts is None:
        return ""
    table = _table(["evaluation set", "corpus records dropped for copying it"], [[name, n] for name, n in sorted(counts.items())])
    shown = "".join(f"<div class='pair'>{_example(ex)}<div class='muted'>{html.escape(reason)}<br>copies "
                    f"{html.escape(detail or '')}</div></div>" for reason, detail, ex in examples)
    return "<h3>Decontamination</h3>" + table + _shown(len(examples), sum(counts.values()), "contaminating records") + shown


def _shown(shown: int, total: int, what: str) -> str:
    """'Examples: 6 of 1,234 merged records.' where the examples are a sample."""
    return f"<p class='muted'>Examples: {shown} of {total:,} {what}.</p>" if 0 < shown < total else ""


def _augmentation(inputs: ReportInputs) -> str:
    if inputs.preview_png:
        body = _img(inputs.preview_png, "originals beside their variants")
    elif inputs.preview_text:
        body = f"<pre>{html.escape(inputs.preview_text)}</pre>"
    else:
        body = "<p>No preview.</p>"
    aug = inputs.metrics.get("augment", {})
    note = f"<p>{aug.get('generated', 0)} variants generated, {sum(aug.get('dropped', {}).values())} dropped, {aug.get('out', 0)} train records after augment.</p>"
    return _section("augmentation", "Augmentation preview", note + body)


def _split(inputs: ReportInputs) -> str:
    split = inputs.metrics.get("split", {})
    per_class = split.get("per_class", {})
    rows = [[label, *(v.get(s, 0) for s in ("train", "val", "test")), *(v.get(f"{s}_fraction", 0) for s in ("train", "val", "test"))]
            for label, v in sorted(per_class.items())]
    leak = inputs.leakage
    leak_text = (f"<p>Leakage certificate: <b>{leak.get('cross_split_pairs', 0)}</b> cross-split pairs "
                 f"({html.escape(leak.get('method', ''))}). Groups on two sides: {split.get('groups_on_two_sides', 0)}.</p>")
    pairs = leak.get("pairs", [])[:20]
    if pairs:
        leak_text += _table(["split", "id", "other split", "other id", "kind", "similarity"],
                            [[p["split"], p["id"], p["other_split"], p["other_id"], p["kind"], p["similarity"]] for p in pairs])
    semantic = leak.get("semantic")
    if semantic:
        leak_text += (f"<p>Semantic leaks: <b>{semantic['leaks']}</b> val/test records whose nearest train record has a cosine "
                      f"of {semantic['threshold']} or more ({html.escape(semantic.get('method', ''))}).</p>")
        if semantic["pairs"]:
            leak_text += _shown(min(len(semantic["pairs"]), 20), semantic["leaks"], "semantic leaks") + _table(
                ["split", "id", "nearest train id", "cosine"], [[p["split"], p["id"], p["other_id"], p["cosine"]] for p in semantic["pairs"][:20]])
    header = ["class", "train", "val", "test", "train share", "val share", "test share"]
    target = split.get("target", {})
    return _section("split", "Split and leakage", f"<p>Target ratios: {html.escape(json.dumps(target))}</p>" + _table(header, rows) + leak_text)


def _metadata(inputs: ReportInputs) -> str:
    """The metadata columns: a row per column (policies, what train fitted, prepare's counts), then the
    features; nothing where the dataset declares none."""
    shown = inputs.metadata
    if shown is None:
        return ""
    prepare = inputs.metrics.get("prepare", {})
    place = f"data/{inputs.dataset}/metadata"
    if shown.fitted is None:
        body = f"<p>No fitted statistics: {html.escape(place)}/fitted.json was not found (the prepare stage has not run for this dataset).</p>"
    else:
        values = prepare.get("values")
        body = (f"<p>{len(shown.fitted.columns)} metadata columns (<code>{html.escape(f'datasets.{inputs.dataset}.metadata')}</code>), "
                f"every statistic fitted on train alone (<code>{html.escape(place)}/fitted.json</code>) and applied unchanged to "
                "train, val and test; " + ("the counts are prepare's, over the three splits." if values is not None
                                          else "no counts: prepare's metrics were not found.") + "</p>")
        rows = [[c.spec.name, c.spec.type, _lines(policies(c.spec)), _lines(statistics(c)), _lines(counts(c.spec, values or {}))]
                for c in shown.fitted.columns]
        body += _table(["column", "type", "policies", "fitted on train", "counts (train, val, test)"], rows)
    body += _features(prepare.get("features"), prepare.get("selected")) + _selection(shown.selection)
    return _section("metadata", "Metadata columns", body)


def _lines(lines: list[str]) -> Markup:
    """Lines of text as one table cell, each escaped."""
    return Markup("<br>".join(html.escape(line) for line in lines))


def _features(features: list[str] | None, selected: list[str] | None) -> str:
    """The feature columns prepare writes (after `id`), those feature selection left out struck through."""
    if features is None:
        return ""
    kept = set(features if selected is None else selected)
    names = ", ".join(f"<code>{html.escape(f)}</code>" if f in kept else f"<code><s>{html.escape(f)}</s></code>"
                      for f in features[:FEATURES_SHOWN])
    more = f" … and {len(features) - FEATURES_SHOWN:,} more in prepare's metrics" if len(features) > FEATURES_SHOWN else ""
    chosen = "" if selected is None else f", {len(selected)} kept by feature selection (the others, struck through, are not written)"
    return (f"<h3>Features</h3><p>{len(features)} feature columns{chosen}, written beside <code>id</code> per split: "
            f"{names or 'none'}{more}.</p>")


def _selection(selection: dict[str, Any] | None) -> str:
    """Feature selection's scores on train, kept features first, then the most informative."""
    if not selection:
        return ""
    scores = sorted(selection.get("scores", []), key=lambda s: (not s.get("kept"), s.get("mutual_information") is None,
                                                                -(s.get("mutual_information") or 0.0)))
    rows = [[s.get("column", ""), "yes" if s.get("kept") else "no", number(s.get("variance")),
             "not scored" if s.get("mutual_information") is None else number(s["mutual_information"])] for s in scores[:SELECTION_ROWS]]
    hidden = len(scores) - SELECTION_ROWS
    note = f"<p class='muted'>{hidden:,} more features in selection.json.</p>" if hidden > 0 else ""
    return ("<h3>Feature selection</h3>" + _table(["feature", "kept", "variance on train", "mutual information with the label"], rows)
            + note)


def _projection(inputs: ReportInputs) -> str:
    """The embedding projection and what it shows, or why there is none."""
    shown = inputs.projection
    if isinstance(shown, str):
        return _section("projection", "Embedding projection", f"<p>{html.escape(shown)}</p>")
    body = _img(plots.embedding_projection(shown), "2-D projection of the embeddings")
    return _section("projection", "Embedding projection", body + _projection_caption(shown, bool(inputs.leakage.get("semantic"))))


def _projection_caption(shown: Projection, semantic: bool) -> str:
    """What the chart shows: which records, the colours, and how many marks of how many listed."""
    classes = len(set(shown.labels))
    drawn = (f"{len(shown.ids):,} of the {shown.total:,} records, chosen by a hash of the id, every marked record kept"
             if shown.capped else f"all {shown.total:,} records")
    colours = (f"{classes} classes: colours from a colour map, no legend" if classes > plots.LEGEND_CLASSES_UP_TO
               else f"{classes} classes")
    leaks = (f"{len(shown.leaks)} semantic leaks ({shown.leaks_listed} in the leakage certificate), with a line to their "
             "nearest train record" if semantic else "none: the leakage certificate has no semantic section")
    return (f"<p>The embed stage's vectors of the final splits' records (generated train records have none), on their "
            f"first two principal components (PCA fitted on the records drawn): {drawn}; left coloured by class "
            f"({colours}), right by split. Black crosses: {len(shown.issues)} label issues ({shown.issues_listed} listed "
            f"by the label_issues stage). Red circles: {leaks}. A point inside another class's cloud hints at a wrong "
            "label; one far from every cloud, at an outlier; a val or test point on a train point, at a leak.</p>")


def _tokens(inputs: ReportInputs) -> str:
    """Token counts of the final splits (rebalance's `tokens`): per split, all records, then the
    classes with the largest share longer than max_length first (at most `TOKEN_CLASS_ROWS`)."""
    tokens = inputs.metrics.get("rebalance", {}).get("tokens")
    if inputs.modality != "text" or not isinstance(tokens, dict):
        return ""
    max_length = tokens.get("max_length")
    intro = (f"<p>Tokens per record of the fine-tuning tokenizer, special tokens included, over the final splits "
             f"(train with its augmented variants and copies). The model reads at most {html.escape(str(max_length))} "
             "tokens (<code>finetune.text.max_length</code>): the rest of a longer record it never sees.</p>")
    body = "".join(_token_table(split, tokens[split]) for split in SPLITS if isinstance(tokens.get(split), dict))
    return _section("tokens", "Token lengths", intro + body)


def _token_table(split: str, summary: dict[str, Any]) -> str:
    per_class = summary.get("per_class", {})
    ranked = sorted(per_class.items(), key=lambda kv: (-(kv[1].get("over_max_length") or 0), -kv[1].get("count", 0), kv[0]))
    rows = [[Markup("<b>all</b>"), *_token_cells(summary)], *([label, *_token_cells(v)] for label, v in ranked[:TOKEN_CLASS_ROWS])]
    hidden = len(ranked) - TOKEN_CLASS_ROWS
    note = ("<p class='muted'>Classes with the largest share longer than max_length first"
            + (f"; {hidden} more in the rebalance metrics" if hidden > 0 else "") + ".</p>") if len(ranked) > 1 else ""
    header = ["class", "records", "mean", "p50", "p90", "p99", "max", "longer than max_length"]
    return f"<h3>{html.escape(split)}</h3>" + _table(header, rows) + note


def _token_cells(summary: dict[str, Any]) -> list[Any]:
    """records, mean, quantiles, max and the share longer than max_length (blank for an empty split)."""
    if not summary.get("count"):
        return [0, *[""] * (len(TOKEN_COLUMNS))]
    return [summary["count"], f"{summary['mean']:.1f}", *(summary[k] for k in TOKEN_COLUMNS[2:]),
            f"{100 * summary['over_max_length']:.2f}%"]


def _training(inputs: ReportInputs) -> str:
    body = ""
    history = inputs.metrics.get("finetune", {}).get("history")
    if history:
        body += "<h3>Fine-tuning curves</h3>" + _img(plots.training_curves(history), "training curves")
    evaluation = inputs.metrics.get("evaluate", {})
    matrix = evaluation.get("confusion_matrix")
    if matrix:
        body += "<h3>Confusion matrix (test)</h3>" + _img(plots.confusion(matrix["rows_true_cols_pred"], matrix["labels"]), "confusion matrix")
        body += _confused_pairs(matrix["rows_true_cols_pred"], matrix["labels"])
    scores = [[k, evaluation[k]] for k in ("accuracy", "macro_f1", "roc_auc", "ece") if k in evaluation]
    if scores:
        body += "<h3>Test scores</h3>" + _table(["metric", "value"], scores)
    per_class = evaluation.get("per_class", {})
    if per_class:
        order = sorted(per_class, key=lambda c: (per_class[c].get("f1") or 0.0, c)) if len(per_class) > MANY_CLASSES else sorted(per_class)
        caption = "<p class='muted'>Worst F1 first.</p>" if len(per_class) > MANY_CLASSES else ""
        body += caption + _table(["class", "precision", "recall", "f1", "support"],
                                 [[c, *(per_class[c].get(k) for k in ("precision", "recall", "f1", "support"))] for c in order])
    body += _baselines(inputs.metrics)
    return _section("training", "Fine-tuning and evaluation", body or "<p>No model metrics.</p>")


def _confused_pairs(matrix: list[list[int]], labels: list[str]) -> str:
    """The most frequent mistakes, where the matrix has too many classes to read them off it."""
    if len(labels) <= plots.CONFUSION_COUNTS_UP_TO:
        return ""
    pairs = sorted(((-n, labels[i], labels[j]) for i, row in enumerate(matrix) for j, n in enumerate(row) if i != j and n > 0))
    rows = [[true, predicted, -n] for n, true, predicted in pairs[:CONFUSED_PAIRS]]
    title = f"<h3>Most frequent mistakes ({min(len(pairs), CONFUSED_PAIRS)} of {len(pairs)} confused pairs)</h3>"
    return title + (_table(["true", "predicted", "test records"], rows) if rows else "<p>None.</p>")


def _baselines(metrics: dict[str, dict[str, Any]]) -> str:
    """Side-by-side comparison with the baselines, wherever the evaluation metrics hold them."""
    comparison = metrics.get("evaluate", {}).get("baselines") or metrics.get("baselines", {}).get("baselines")
    if not isinstance(comparison, dict) or not comparison:
        return ""
    rows = []
    for name, values in sorted(comparison.items()):
        if isinstance(values, dict):
            rows.append([name, *(values.get(k, "") for k in ("macro_f1", "accuracy", "model_minus_baseline_macro_f1")),
                         _interval(values.get("difference_interval_95")), values.get("beaten", "")])
    warnings = metrics.get("evaluate", {}).get("warnings", [])
    notes = "".join(f"<p class='bad'>{html.escape(str(w))}</p>" for w in warnings)
    header = ["model", "macro_f1", "accuracy", "fine-tuned minus it", "95% interval of the difference", "fine-tuned model beat it"]
    return "<h3>Against the baselines</h3>" + _table(header, rows) + notes


def _interval(bounds: Any) -> str:
    """A bootstrap interval as text; an interval straddling 0 means the split cannot tell the two apart."""
    if not isinstance(bounds, list) or len(bounds) != 2:
        return ""
    low, high = bounds
    return f"[{low:+.4f}, {high:+.4f}]" + (" (within noise)" if low <= 0 <= high else "")


def _params(inputs: ReportInputs) -> str:
    text = json.dumps(inputs.card.get("params", {}), indent=2, sort_keys=True)
    return _section("params", "Parameters that produced this version", f"<pre>{html.escape(text)}</pre>")
