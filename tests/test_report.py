"""The data report and the quality gates: rendered in a real browser, gates that fail a run."""
from __future__ import annotations

import html
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_params
from pipeline.params import GatesParams
from pipeline.report.gates import evaluate_gates, violations
from pipeline.report.page import Example, ReportInputs, render

SECTIONS = ["summary", "gates", "flow", "classes", "duplicates", "quality", "augmentation", "split", "training", "params"]
METRICS = {
    "clean": {"in": 100, "out": 90, "generated": 0, "merged": 0, "dropped": {"empty_text": 4, "ragged_row": 6},
              "labels": {"a": 60, "b": 30}, "repaired": {"mojibake": 3}},
    "dedup": {"in": 90, "out": 80, "generated": 0, "merged": 10, "dropped": {}, "duplicate_rate": 0.111, "clusters": 4,
              "near_clusters": 2, "label_conflicts": 1, "labels": {"a": 52, "b": 28}},
    "split": {"in": 80, "out": 80, "generated": 0, "merged": 0, "dropped": {}, "target": {"train": 0.8, "val": 0.1, "test": 0.1},
              "per_class": {"a": {"train": 42, "val": 5, "test": 5}, "b": {"train": 22, "val": 3, "test": 3}}, "groups_on_two_sides": 0},
    "finetune": {"in": 72, "out": 72, "generated": 0, "merged": 0, "dropped": {},
                 "history": [{"epoch": 1, "train_loss": 0.6, "val_macro_f1": 0.7}, {"epoch": 2, "train_loss": 0.3, "val_macro_f1": 0.8}]},
    "evaluate": {"in": 8, "out": 8, "generated": 0, "merged": 0, "dropped": {}, "accuracy": 0.75, "macro_f1": 0.7,
                 "per_class": {"a": {"precision": 0.8, "recall": 0.8, "f1": 0.8, "support": 5}, "b": {"precision": 0.6, "recall": 0.6, "f1": 0.6, "support": 3}},
                 "confusion_matrix": {"labels": ["a", "b"], "rows_true_cols_pred": [[4, 1], [1, 2]]}},
}
CARD = {"version": "abc123", "records": {"train": 64, "val": 8, "test": 8}, "generated": {"train": 0, "val": 0, "test": 0},
        "classes": {"train": {"a": 42, "b": 22}, "val": {"a": 5, "b": 3}, "test": {"a": 5, "b": 3}}, "params": {"seed": 42}}
LEAKAGE = {"cross_split_pairs": 0, "method": "exact content hash", "pairs": []}


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _inputs(gates=None) -> ReportInputs:
    a, b = Example("id-a", "a", image=_png(1)), Example("id-b", "a", image=_png(2))
    return ReportInputs("demo", "image", CARD, LEAKAGE, METRICS, gates or evaluate_gates(METRICS, CARD, LEAKAGE, GatesParams()),
                        {"ingest": {"a": 60, "b": 30}, "train": {"a": 42, "b": 22}},
                        duplicates=[("near_duplicate", "hamming 3 with id-b", a, b)], flagged=[("blurry", "12 < 20", a)],
                        preview_png=_png(3))


# --- gates ----------------------------------------------------------------------------------

def test_gates_pass_and_fail_with_value_and_threshold():
    strict = GatesParams(max_drop_rate_per_reason=0.05, min_test_macro_f1=0.9, max_duplicate_rate=None)
    gates = evaluate_gates(METRICS, CARD, LEAKAGE, strict)
    failed = {g.name: g for g in violations(gates)}
    assert set(failed) == {"max_drop_rate_per_reason", "min_test_macro_f1"}
    assert failed["max_drop_rate_per_reason"].where == "clean: ragged_row" and failed["max_drop_rate_per_reason"].value == 0.06
    assert "0.7 (must be >= 0.9) VIOLATED" in failed["min_test_macro_f1"].describe()
    assert not any(g.name == "max_duplicate_rate" for g in gates)  # null threshold: not checked


def test_leak_and_tiny_class_gates():
    gates = evaluate_gates(METRICS, {**CARD, "classes": {"test": {"a": 5, "b": 0}}}, {"cross_split_pairs": 2}, GatesParams())
    assert {g.name for g in violations(gates)} == {"min_records_per_class_per_split", "max_cross_split_leaks"}



def test_a_model_that_loses_to_a_baseline_fails_the_margin_gate():
    versus = {"tfidf": {"macro_f1": 0.75, "model_minus_baseline_macro_f1": -0.05},
              "random_init": {"macro_f1": 0.4, "model_minus_baseline_macro_f1": 0.3}}
    metrics = {**METRICS, "evaluate": {**METRICS["evaluate"], "baselines": versus}}
    gates = evaluate_gates(metrics, CARD, LEAKAGE, GatesParams(min_margin_over_baselines=0.0))
    failed = violations(gates)
    assert [(g.name, g.where) for g in failed] == [("min_margin_over_baselines", "tfidf")]
    assert "-0.05 (must be >= 0) VIOLATED" in failed[0].describe()
    assert not any(g.name == "min_margin_over_baselines" for g in evaluate_gates(metrics, CARD, LEAKAGE, GatesParams()))

# --- the page -------------------------------------------------------------------------------

def test_page_is_self_contained_with_every_section():
    page = render(_inputs())
    for key in SECTIONS:
        assert f"id='{key}'" in page
    assert "http://" not in page and "https://" not in page and "src='data:image/png;base64," in page


def test_corpus_strings_in_tables_stay_text():
    """A label, a reason or an id that looks like HTML is escaped in every table: the corpus is not
    trusted, the markup the report makes itself is kept."""
    hostile = "<script>alert(1)</script>"
    metrics = {**METRICS, "split": {**METRICS["split"], "per_class": {hostile: {"train": 1, "val": 1, "test": 1}}},
               "clean": {**METRICS["clean"], "dropped": {"<img src=x onerror=alert(2)>": 3}}}
    inputs = _inputs()
    page = render(ReportInputs(inputs.dataset, inputs.modality, CARD, LEAKAGE, metrics, inputs.gates, inputs.class_phases,
                               duplicates=inputs.duplicates, flagged=inputs.flagged, preview_png=inputs.preview_png))
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "<span class='ok'>pass</span>" in page and "<code>abc123</code>" in page


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    return exe


def _browser(exe: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # starts a browser
def test_page_renders_in_headless_chromium(tmp_path):
    """The page renders offline: the screenshot is not blank and the DOM holds every section and chart."""
    exe = _chromium()
    page = tmp_path / "report.html"
    page.write_text(render(_inputs()), encoding="utf-8")
    shot = tmp_path / "shot.png"
    _browser(exe, tmp_path, "--window-size=1280,3000", f"--screenshot={shot}", page.as_uri())
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.01  # text and charts, not a white page
    dom = _browser(exe, tmp_path, "--dump-dom", page.as_uri()).stdout
    for key in SECTIONS:
        assert f'id="{key}"' in dom, key
    assert dom.count("<img") >= 5 and "Quality gates" in dom and "abc123" in dom


# --- the stage ------------------------------------------------------------------------------

def _stage_inputs(tmp_path: Path) -> tuple[Path, Path]:
    data, metrics = tmp_path / "data", tmp_path / "metrics"
    (data / "final").mkdir(parents=True)
    (metrics / "timings").mkdir(parents=True)
    (data / "final" / "card.json").write_text(json.dumps(CARD))
    (data / "final" / "leakage.json").write_text(json.dumps(LEAKAGE))
    for stage, values in METRICS.items():
        (metrics / f"{stage}.json").write_text(json.dumps(values))
        (metrics / "timings" / f"{stage}.json").write_text(json.dumps({"seconds": 1.5}))
    return data, metrics


@pytest.mark.parametrize("warn_only, code", [(False, 1), (True, 0)])
def test_violated_gate_fails_the_stage_unless_warn_only(tmp_path, caplog, warn_only, code):
    from pipeline.stages import report

    data, metrics = _stage_inputs(tmp_path)
    datasets = {"t": {"modality": "text", "source": "x.tsv", "format": "tsv"}}
    params = write_params(tmp_path / "params.yaml", datasets, gates={"min_test_macro_f1": 0.9, "warn_only": warn_only})
    caplog.set_level("INFO", logger="pipeline")
    out = tmp_path / "report.html"
    result = report.main(["--dataset", "t", "--params", str(params), "--data", str(data), "--stage-metrics", str(metrics),
                          "--output", str(out), "--metrics", str(tmp_path / "report.json")])
    assert result == code and out.exists()
    assert "min_test_macro_f1: 0.7 (must be >= 0.9) VIOLATED" in caplog.text


def test_page_does_not_change_with_wall_clock_seconds(tmp_path):
    """The page does not read the stages' timings, so a rerun gives the same bytes (dvc repro --force stays stable)."""
    from pipeline.stages import report

    data, metrics = _stage_inputs(tmp_path)
    params = write_params(tmp_path / "params.yaml", {"t": {"modality": "text", "source": "x.tsv", "format": "tsv"}})
    args = ["--dataset", "t", "--params", str(params), "--data", str(data), "--stage-metrics", str(metrics), "--metrics", str(tmp_path / "r.json")]
    report.main([*args, "--output", str(tmp_path / "a.html")])
    (metrics / "timings" / "clean.json").write_text(json.dumps({"seconds": 99.0}))
    report.main([*args, "--output", str(tmp_path / "b.html")])
    assert (tmp_path / "a.html").read_bytes() == (tmp_path / "b.html").read_bytes()


# --- many classes ---------------------------------------------------------------------------

LAYOUT_PROBE = """<script>window.addEventListener('load', () => {
  const page = document.documentElement;
  const images = [...document.images].map(i => [i.alt, i.naturalWidth, i.naturalHeight]);
  const tables = [...document.querySelectorAll('table')].map(t => t.getBoundingClientRect().right);
  const probe = document.createElement('pre');
  probe.id = 'layout';
  probe.textContent = JSON.stringify({scroll: page.scrollWidth, client: page.clientWidth, images, tables});
  document.body.append(probe);
});</script>"""


def _many_class_inputs(classes: int) -> ReportInputs:
    """80 classes of very different sizes, through every phase, with a model that confuses some."""
    labels = [f"class-{i:02d}-{'x' * (i % 7)}" for i in range(classes)]
    sizes = {label: 5 + 3 * i for i, label in enumerate(labels)}
    phases = {phase: {label: max(1, int(n * share)) for label, n in sizes.items()}
              for phase, share in (("ingest", 1.2), ("dedup", 1.0), ("train", 0.8), ("val", 0.1), ("test", 0.1), ("final", 0.9))}
    matrix = [[phases["test"][labels[i]] if i == j else int((i * 7 + j) % 11 == 0) for j in range(classes)] for i in range(classes)]
    metrics = {**METRICS,
               "split": {**METRICS["split"], "per_class": {label: {s: phases[s][label] for s in ("train", "val", "test")} for label in labels}},
               "evaluate": {**METRICS["evaluate"], "confusion_matrix": {"labels": labels, "rows_true_cols_pred": matrix},
                            "per_class": {label: {"precision": 0.5, "recall": 0.5, "f1": (i % 10) / 10, "support": 3}
                                          for i, label in enumerate(labels)}}}
    return ReportInputs("many", "text", CARD, LEAKAGE, metrics, evaluate_gates(metrics, CARD, LEAKAGE, GatesParams()), phases)


def test_many_classes_run_down_the_page_not_across_it():
    page = render(_many_class_inputs(80))
    classes = page[page.index("id='classes'"):page.index("id='duplicates'")]
    assert classes.count("<tr>") == 81 and "<th>final</th>" in classes  # a row per class, a column per phase
    assert classes.index("<td>class-79-xx</td>") < classes.index("<td>class-00-</td>")  # largest first
    training = page[page.index("id='training'"):]
    assert "Most frequent mistakes" in training and "Worst F1 first" in training
    worst_first = training[training.index("Worst F1 first"):]
    assert worst_first.index("<td>class-00-</td>") < worst_first.index("<td>class-09-xx</td>")  # F1 0.0 before 0.9


@pytest.mark.slow  # starts a browser
@pytest.mark.parametrize("classes", [80, 300])
def test_a_report_of_many_classes_fits_the_page_in_chromium(tmp_path, classes):
    """Measured in a real browser: nothing wider than the window, and no chart taller than a few screens."""
    exe = _chromium()
    page = tmp_path / "report.html"
    page.write_text(render(_many_class_inputs(classes)).replace("</body>", LAYOUT_PROBE + "</body>"), encoding="utf-8")
    dom = _browser(exe, tmp_path, "--window-size=1280,1000", "--dump-dom", page.as_uri()).stdout
    layout = json.loads(html.unescape(dom.split('<pre id="layout">')[1].split("</pre>")[0]))
    assert layout["scroll"] <= layout["client"], layout
    assert max(right for right in layout["tables"]) <= layout["client"]
    heights = {alt: (width, height) for alt, width, height in layout["images"]}
    assert heights["records per class and phase"][1] <= 1800 and heights["confusion matrix"][0] <= 1100, heights


def test_decontamination_lists_each_set_and_what_the_dropped_records_copied():
    metrics = {**METRICS, "dedup": {**METRICS["dedup"], "decontaminated": {"bench": 3}}}
    copy = Example("id-c", "a", text="what is the capital of <France>")
    inputs = ReportInputs("demo", "text", CARD, LEAKAGE, metrics, [], {"ingest": {"a": 1}},
                          contaminating=[("contaminates:bench", "bench.tsv:12 (jaccard 0.912)", copy)])
    section = render(inputs).split("id='duplicates'")[1].split("</section>")[0]
    assert "<h3>Decontamination</h3>" in section and "<td>bench</td><td>3</td>" in section
    assert "copies bench.tsv:12 (jaccard 0.912)" in section and "Examples: 1 of 3 contaminating records." in section
    assert "&lt;France&gt;" in section  # corpus text stays text
    assert "Decontamination" not in render(_inputs())  # no sets configured: no section


def test_the_split_section_lists_semantic_leaks():
    leakage = {**LEAKAGE, "semantic": {"threshold": 0.95, "method": "cosine", "leaks": 1,
                                       "pairs": [{"split": "test", "id": "x1", "other_split": "train", "other_id": "t9", "cosine": 0.9712}]}}
    page = render(ReportInputs("demo", "text", CARD, leakage, METRICS, [], {"ingest": {"a": 1}}))
    section = page.split("id='split'")[1].split("</section>")[0]
    assert "Semantic leaks: <b>1</b>" in section and "<td>x1</td><td>t9</td><td>0.9712</td>" in section


def test_the_page_says_what_the_semantic_stage_did_with_example_pairs():
    a, b = Example("id-a", "a", text="my parcel never came"), Example("id-b", "a", text="the parcel I ordered has not arrived")
    semantic = {"in": 80, "out": 80, "generated": 0, "merged": 0, "dropped": {}, "threshold": 0.9, "action": "group", "pairs": 3,
                "records_regrouped": 2, "groups_joined": 2, "largest_joined_group": 4, "flagged": {"semantic_neighbour": 6}}
    metrics = {**METRICS, "semantic": semantic}
    page = render(ReportInputs("demo", "text", CARD, LEAKAGE, metrics, [], {"train": {"a": 1}},
                               neighbours=[("semantic_neighbour", "cosine 0.9412 with id-b", a, b)]))
    duplicates = page.split("id='duplicates'")[1].split("<section")[0]
    assert "3 pairs of records whose embeddings' cosine is 0.9 or more: all kept" in duplicates
    assert "2 records moved into a neighbour's group (2 groups joined, the largest now 4 records)" in duplicates
    assert "Examples: 1 of 3 pairs." in duplicates and "cosine 0.9412 with id-b" in duplicates and "the parcel I ordered" in duplicates
    assert ">semantic<" in page.split("id='flow'")[1].split("</section>")[0]  # a row of the records-through-stages table
    off = render(ReportInputs("demo", "text", CARD, LEAKAGE, {**METRICS, "semantic": {**semantic, "threshold": None}}, [], {"train": {"a": 1}}))
    assert "Off (dedup.semantic.threshold is null)." in off
