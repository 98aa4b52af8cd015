"""The classifiers on the packaged pretrained weights: frozen prefixes, layer groups, probes, save and load.

Small inputs keep these fast: a handful of short texts, 32-pixel images.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import make_params
from pipeline.io import write_folder
from pipeline.model.device import make_deterministic
from pipeline.model.models import (ImageClassifier, TextClassifier, classifier_for, default_image_weights,
                                   default_text_model, frozen_depth, load_classifier)
from pipeline.model.train import predict_logits

TEXTS = pd.DataFrame({"text": ["refund my last invoice please", "where is my parcel", "the app crashes on login",
                               "ok", "my package was sent to the wrong address and nobody answers the phone"]})


def png(seed: int, size: int = 40) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGES = pd.DataFrame({"image": [png(i) for i in range(4)]})


@pytest.fixture(scope="module")
def text_model() -> TextClassifier:
    make_deterministic(0, 2)
    return TextClassifier.pretrained(default_text_model(), ["a", "b", "c"], max_length=16, frozen=4)


@pytest.fixture(scope="module")
def image_model() -> ImageClassifier:
    make_deterministic(0, 2)
    return ImageClassifier.pretrained(default_image_weights(), ["x", "y"], image_size=32, frozen=14)


def test_strategy_sets_the_frozen_depth():
    assert frozen_depth("partial", 3) == 3 and frozen_depth("gradual", 3) == 3
    assert frozen_depth("full", 3) == 0 and frozen_depth("linear_probe", 3) >= 16


def test_text_layers_run_in_pieces_equal_the_encoder(text_model):
    """The manual path (embeddings, then layers) is the encoder's own forward pass."""
    batch = text_model._token_batch(text_model._tokens(TEXTS), torch.arange(len(TEXTS)))
    with torch.no_grad():
        reference = text_model.net.encoder(**batch).last_hidden_state
        ours = text_model.net.run_layers(text_model.net.embed(batch["input_ids"]), batch["attention_mask"], 0)
    real = batch["attention_mask"].unsqueeze(-1).bool()
    assert torch.allclose(reference.masked_select(real), ours.masked_select(real), atol=1e-5)


def test_cached_text_prefix_gives_the_full_forward_logits(text_model):
    inputs = text_model.inputs(TEXTS)
    assert inputs.hidden is not None and [len(h) for h in inputs.hidden] == inputs.lengths.tolist()
    cached = predict_logits(text_model, inputs, batch_size=2)
    batch = text_model._token_batch(inputs, torch.arange(len(TEXTS)))
    text_model.net.eval()
    with torch.no_grad():
        full = text_model.net(batch["input_ids"], batch["attention_mask"]).numpy()
    assert np.allclose(cached, full, atol=1e-5)
    assert inputs.lengths.max() <= 16  # truncated to max_length


def test_text_groups_follow_the_frozen_depth(text_model):
    names = [type(g).__name__ for g in text_model.groups()]
    assert len(names) == 3 and names[-1] == "Sequential"  # layers 4 and 5, then the head
    make_deterministic(0, 2)
    full = TextClassifier.pretrained(default_text_model(), ["a", "b"], max_length=16, frozen=0)
    assert len(full.groups()) == 8 and type(full.groups()[0]).__name__ == "BertEmbeddings"


def test_train_mode_only_in_active_groups(text_model):
    text_model.train_mode(1)
    assert text_model.net.head.training and not text_model.net.layers[5].training
    text_model.train_mode(0)
    assert not text_model.net.head.training


def test_random_init_keeps_the_architecture_not_the_weights(text_model):
    make_deterministic(0, 2)
    scratch = TextClassifier.pretrained(default_text_model(), ["a", "b", "c"], max_length=16, random_init=True)
    ours, theirs = dict(text_model.net.named_parameters()), dict(scratch.net.named_parameters())
    assert ours.keys() == theirs.keys()
    name = "encoder.encoder.layer.0.attention.self.query.weight"
    assert ours[name].shape == theirs[name].shape and not torch.equal(ours[name], theirs[name])


def test_text_save_and_load_give_the_same_logits(text_model, tmp_path):
    write_folder(text_model.files(), tmp_path / "m")
    loaded = load_classifier(tmp_path / "m")
    assert isinstance(loaded, TextClassifier) and loaded.labels == ["a", "b", "c"] and loaded.frozen == 4
    a = predict_logits(text_model, text_model.inputs(TEXTS), 8)
    b = predict_logits(loaded, loaded.inputs(TEXTS), 8)
    assert np.array_equal(a, b)


def test_text_features_are_mean_pooled_sentence_embeddings(text_model):
    features = text_model.features(TEXTS)
    assert features.shape == (5, 384)
    similar = torch.nn.functional.cosine_similarity(features[1:2], text_model.features(
        pd.DataFrame({"text": ["where is my package"]})))
    unrelated = torch.nn.functional.cosine_similarity(features[1:2], features[0:1])
    assert similar > unrelated


def test_image_prefix_cache_and_probe(image_model):
    inputs = image_model.inputs(IMAGES)
    assert not inputs.pixels and len(inputs.rows) == 4
    assert image_model.take(inputs, torch.arange(4))["x"].shape[:2] == (4, 192)  # block 13's output (stem and 14 blocks frozen)
    cached = predict_logits(image_model, inputs, 2)
    image_model.net.eval()
    with torch.no_grad():
        full = image_model.net(image_model.pixels(list(IMAGES["image"]))).numpy()
    assert np.allclose(cached, full, atol=1e-5)
    features = image_model.features(IMAGES)
    assert features.shape == (4, 1280)
    probe = image_model.probe()
    with torch.no_grad():
        assert np.allclose(probe.logits({"features": features}).numpy(), full, atol=1e-5)


def test_image_groups_and_save_load(image_model, tmp_path):
    assert len(image_model.groups()) == 4  # blocks 14 and 15, head conv, new head
    write_folder(image_model.files(), tmp_path / "m")
    loaded = load_classifier(tmp_path / "m")
    assert isinstance(loaded, ImageClassifier) and (loaded.frozen, loaded.image_size) == (14, 32)
    assert np.array_equal(predict_logits(image_model, image_model.inputs(IMAGES), 4),
                          predict_logits(loaded, loaded.inputs(IMAGES), 4))


def test_classifier_for_reads_the_params_section():
    make_deterministic(0, 2)
    params = make_params(finetune={"image": {"strategy": "full", "image_size": 32, "dropout": 0.3}}).finetune.image
    model = classifier_for(params, ["x", "y"])
    assert model.frozen == 0 and model.net._dropout.p == 0.3 and len(model.groups()) == 16 + 3
    inputs = model.inputs(IMAGES)  # nothing frozen: the decoded pixels themselves, scaled in each batch
    assert inputs.pixels and inputs.rows[0].dtype == torch.uint8
    assert torch.equal(model.take(inputs, torch.arange(4))["x"], model.pixels(list(IMAGES["image"])))


@pytest.mark.slow  # exports and runs two graphs
def test_onnx_export_matches_torch_on_other_batches(text_model, image_model, tmp_path):
    """The exported graph has dynamic batch and length axes: another batch gives torch's logits too."""
    ort = pytest.importorskip("onnxruntime")
    from pipeline.model.onnx_export import export_and_check

    for model, frame, other in ((text_model, TEXTS.head(3), TEXTS.tail(2)), (image_model, IMAGES.head(3), IMAGES.tail(1))):
        exported = export_and_check(model, frame)
        assert exported.report["checked_records"] == 3 and exported.report["max_abs_difference"] < 1e-4
        session = ort.InferenceSession(exported.data, providers=["CPUExecutionProvider"])
        example = model.example(other)
        got = session.run(None, {n: t.numpy() for n, t in zip(model.input_names, example)})[0]
        model.net.eval()
        with torch.no_grad():
            assert np.allclose(got, model.net(*example).numpy(), atol=1e-4)
