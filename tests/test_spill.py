"""Model inputs kept in scratch files: rows read back as written, and the same training bits as in memory."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.errors import StageError
from pipeline.io import features_table, write_records, write_table_chunks
from pipeline.model.device import make_deterministic
from pipeline.model.models import ImageClassifier, TextClassifier, default_image_weights, default_text_model
from pipeline.model.spill import MEMORY, FileStore, TensorFile, feature_rows, first_records, split_frames
from pipeline.model.train import Recipe, fit, predict_logits
from conftest import text_records
from test_models import png

TEXTS = ["refund my last invoice please", "where is my parcel", "the app crashes on login", "ok",
         "my package was sent to the wrong address and nobody answers the phone", "invoice", "crash report attached",
         "the courier left it at the wrong door", "two charges for one order", "password reset loops forever"]


def test_a_tensor_file_gives_back_every_row_as_written(tmp_path):
    rows = TensorFile(tmp_path / "ids.bin", torch.long)
    written = [torch.arange(n, dtype=torch.long) * 7 for n in (3, 0, 1, 40)]
    for tensor in written:
        rows.append(tensor)
    assert len(rows) == 4 and all(torch.equal(rows[i], t) for i, t in enumerate(written))
    assert rows[3].dtype == torch.long and rows[1].shape == (0,)


def test_allocated_slots_fill_in_any_order_and_refuse_the_wrong_shape(tmp_path):
    lengths = [2, 5, 1]
    rows = TensorFile(tmp_path / "hidden.bin", torch.float32, tail=(3,), lengths=lengths)
    values = {i: torch.randn(n, 3) for i, n in enumerate(lengths)}
    for i in (2, 0, 1):
        rows[i] = values[i]
    assert all(torch.equal(rows[i], values[i]) for i in range(3))
    with pytest.raises(ValueError, match="room for 2"):
        rows[0] = torch.randn(3, 3)
    with pytest.raises(ValueError, match="shape"):
        rows[0] = torch.randn(2, 4)
    with pytest.raises(TypeError):
        rows[0] = torch.zeros(2, 3, dtype=torch.float64)
    rows.close()


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """A record set of the ten texts in shards: what finetune reads."""
    folder = tmp_path_factory.mktemp("split")
    records = text_records([(("bill", "ship", "tech")[i % 3], t) for i, t in enumerate(TEXTS)])
    write_records(records, folder / "train.parquet")
    return folder / "train.parquet"


def test_split_frames_read_in_chunks_give_the_records_in_id_order(split):
    chunks = list(split_frames(split, "text", rows=3))
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    whole = pd.concat(chunks, ignore_index=True)
    assert whole["id"].is_monotonic_increasing and sorted(whole["text"]) == sorted(TEXTS)
    known = pd.concat(split_frames(split, "text", ["ship"], rows=3), ignore_index=True)
    assert set(known["label"]) == {"ship"} and len(known) == 3
    assert first_records(split, "text", ["bill", "tech"], 4)["id"].tolist() == whole.loc[whole["label"] != "ship", "id"].head(4).tolist()


def _train(model, inputs, targets: torch.Tensor, seed: int = 3) -> dict[str, torch.Tensor]:
    recipe = Recipe(epochs=2, batch_size=4, lr=1e-3, schedule="cosine", warmup=0.1, weight_decay=0.01, clip_norm=1.0)
    fit(model, (inputs, targets), (inputs, targets), n_classes=3, recipe=recipe, seed=seed)
    return {k: v.clone() for k, v in model.net.state_dict().items()}


def test_text_trained_from_files_read_in_chunks_equals_trained_in_memory(split, tmp_path):
    """The partial strategy (frozen prefix cached) from a split read three records at a time into
    scratch files gives the same weights, bit for bit, as from the whole frame in memory."""
    frame = pd.concat(split_frames(split, "text"), ignore_index=True)
    targets = torch.tensor([("bill", "ship", "tech").index(label) for label in frame["label"]])
    weights = []
    for records, store in ((frame, MEMORY), (split_frames(split, "text", rows=3), FileStore(tmp_path))):
        make_deterministic(0, 2)
        model = TextClassifier.pretrained(default_text_model(), ["bill", "ship", "tech"], max_length=16, frozen=4)
        inputs = model.inputs(records, store)
        weights.append(_train(model, inputs, targets))
    assert list(tmp_path.glob("hidden-*.bin")) and list(tmp_path.glob("ids-*.bin"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("frozen", [0, 14])
def test_images_from_files_give_the_same_logits_and_training_as_in_memory(tmp_path, frozen):
    images = pd.DataFrame({"image": [png(i, size=24 + i) for i in range(10)]})
    targets = torch.tensor([i % 3 for i in range(10)])
    results = []
    for records, store in ((images, MEMORY), ([images.iloc[:4], images.iloc[4:]], FileStore(tmp_path / str(frozen)))):
        (tmp_path / str(frozen)).mkdir(exist_ok=True)
        make_deterministic(0, 2)
        model = ImageClassifier.pretrained(default_image_weights(), ["a", "b", "c"], image_size=32, frozen=frozen)
        inputs = model.inputs(records, store, batch_size=3)
        before = predict_logits(model, inputs, 4)
        results.append((before, _train(model, inputs, targets)))
    (memory_logits, memory_weights), (file_logits, file_weights) = results
    assert np.array_equal(memory_logits, file_logits)
    assert all(torch.equal(memory_weights[k], file_weights[k]) for k in memory_weights)


def test_feature_rows_follow_the_ids_and_name_a_missing_one(tmp_path):
    frame = pd.DataFrame({"id": [f"{i:016x}" for i in range(6)], "label": "a"})
    matrix = np.arange(24, dtype=np.float32).reshape(6, 4)
    path = tmp_path / "train.parquet"
    write_table_chunks([features_table(frame.iloc[:4], matrix[:4]), features_table(frame.iloc[4:], matrix[4:])], path)
    rows = feature_rows(path, frame["id"].iloc[[1, 3, 4]], MEMORY)
    assert np.array_equal(np.stack([r.numpy() for r in rows]), matrix[[1, 3, 4]])
    with pytest.raises(StageError, match="no features for record 'ffffffffffffffff'"):
        feature_rows(path, pd.Series(["0000000000000001", "ffffffffffffffff"]), MEMORY)
