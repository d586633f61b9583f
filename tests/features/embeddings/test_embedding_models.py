"""Training, saving, loading and applying embedding models (fast: tiny data, few epochs)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from dls_microscopy.errors import CorruptDataError, InputError, ModelNotFoundError, OutputError
from dls_microscopy.features.embeddings import (
    TrainingSample,
    apply_embeddings,
    load_model,
    read_record,
    sha256_file,
    train_embedding_model,
)


def test_training_loss_decreases_and_record_is_complete(models, fast):
    for kind, (path, record) in models.items():
        losses = record.training["loss_history"]
        assert len(losses) == fast["epochs"]
        assert np.all(np.isfinite(losses))
        assert losses[-1] < losses[0], (kind, losses)
        on_disk = json.loads(path.with_suffix(".json").read_text())
        assert on_disk["weights_sha256"] == sha256_file(path) == record.weights_sha256
        assert on_disk["seed"] == 5 and len(on_disk["data_sha256"]) == 64
        assert on_disk["kind"] == kind and on_disk["arch"]["dim"] == 32
        assert on_disk["training"]["decorrelation"] > 0  # the default adds the decorrelation term
    assert models["image"][1].preprocessing["frame"] == "principal"


def test_decorrelation_loss_is_zero_for_independent_dims_and_one_for_collapsed():
    from dls_microscopy.features.embeddings.training import decorrelation_loss

    gen = torch.Generator().manual_seed(0)
    independent = torch.randn(4096, 8, generator=gen)
    assert float(decorrelation_loss(independent)) < 0.01
    collapsed = torch.randn(4096, 1, generator=gen) * torch.linspace(0.5, 2.0, 8)  # one direction
    assert float(decorrelation_loss(collapsed)) == pytest.approx(1.0, abs=1e-5)
    x = (torch.randn(64, 8, generator=gen) @ torch.randn(8, 8, generator=gen)).requires_grad_(True)
    loss = decorrelation_loss(x)
    loss.backward()  # differentiable, and a gradient step lowers it
    with torch.no_grad():
        assert float(decorrelation_loss(x - 0.5 * x.grad / x.grad.norm())) < float(loss)


def test_default_epochs_give_small_training_sets_enough_steps():
    from dls_microscopy.features.embeddings.training import DEFAULT_EPOCHS, MIN_STEPS, default_epochs

    # 4,096 objects in batches of 64: 64 steps per epoch, the fixed default is already enough
    assert default_epochs(4096, 64) == DEFAULT_EPOCHS
    # 373 objects: 5 steps per epoch, so 150 epochs make the 750 steps
    assert default_epochs(373, 64) == 150 and 150 * (373 // 64) >= MIN_STEPS
    # fewer objects than a batch: one step per epoch
    assert default_epochs(10, 64) == MIN_STEPS
    # otherwise the fewest epochs that make MIN_STEPS: 1,000 objects, 15 steps per epoch
    epochs = default_epochs(1000, 64)
    assert epochs * 15 >= MIN_STEPS > (epochs - 1) * 15


def test_weights_are_a_plain_state_dict_loaded_weights_only(models):
    path, _ = models["shape"]
    state = torch.load(path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    net, rec = load_model(path)
    assert rec == read_record(path) and not net.training


def test_same_seed_same_weights_other_seed_differs(samples, models, fast, tmp_path):
    _, record = models["shape"]
    # under another file name: the bytes do not depend on it
    again = train_embedding_model(samples, "shape", tmp_path / "again.pt", seed=5, **fast)
    assert again.weights_sha256 == record.weights_sha256
    assert again.data_sha256 == record.data_sha256
    other = train_embedding_model(samples, "shape", tmp_path / "other.pt", seed=6, **fast)
    assert other.weights_sha256 != record.weights_sha256


def test_embeddings_are_finite_and_cover_every_object(wells, models):
    w = wells[0]
    table = apply_embeddings(
        w.image, w.labels, [models["image"][0], models["shape"][0]], spacing=w.spacing, device="cpu"
    )
    ids = table.column("Metadata_ObjectID").to_numpy()
    np.testing.assert_array_equal(ids, np.arange(1, w.n_nuclei + 1))
    names = table.column_names
    assert names[1] == "Embedding_Image_000" and names[33] == "Embedding_Shape_000"
    assert len(names) == 1 + 32 + 32
    values = np.stack([table.column(n).to_numpy() for n in names[1:]], axis=1)
    assert values.dtype == np.float32 and np.all(np.isfinite(values))
    assert np.std(values, axis=0).max() > 0  # objects are not all embedded alike
    meta = json.loads(table.schema.metadata[b"dls_microscopy"])
    assert [m["sha256"] for m in meta["models"]] == [models[k][1].weights_sha256 for k in ("image", "shape")]


def test_embedding_does_not_depend_on_batching(wells, models):
    w = wells[1]
    model = models["image"][0]
    a = apply_embeddings(w.image, w.labels, model, spacing=w.spacing, device="cpu", batch_size=64)
    b = apply_embeddings(w.image, w.labels, model, spacing=w.spacing, device="cpu", batch_size=2)
    for name in a.column_names[1:]:
        np.testing.assert_allclose(a.column(name).to_numpy(), b.column(name).to_numpy(), rtol=1e-4, atol=1e-5)


def test_missing_model_says_how_to_train_one(wells, tmp_path):
    w = wells[0]
    with pytest.raises(ModelNotFoundError, match="embed train") as info:
        apply_embeddings(w.image, w.labels, tmp_path / "nope.pt", spacing=w.spacing)
    assert isinstance(info.value, FileNotFoundError)
    assert "nope.pt" in str(info.value)
    (tmp_path / "norecord.pt").write_bytes(b"weights without their record")
    with pytest.raises(ModelNotFoundError, match=r"--out norecord\.pt`") as info:
        apply_embeddings(w.image, w.labels, tmp_path / "norecord.pt", spacing=w.spacing)
    assert "norecord.json" in str(info.value)  # the file missing, named; the hint gives the weights


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"arch": "small"}, "'arch' must be an object"),
        ({"preprocessing": None}, "'preprocessing' must be an object"),
        ({"training": [1]}, "'training' must be an object"),
        ({"seed": "5"}, "'seed' must be an integer"),
        ({"preprocessing": {"channels": "DAPI"}}, "'preprocessing.channels' must be a list"),
        (["not", "a", "record"], "not a JSON object"),
    ],
)
def test_a_record_with_values_of_the_wrong_json_type_is_refused(models, tmp_path, change, match):
    """They were TypeErrors (or channels 'D', 'A', 'P', 'I') when the model was used."""
    path, _ = models["image"]
    copy = tmp_path / "image.pt"
    copy.write_bytes(path.read_bytes())
    record = json.loads(path.with_suffix(".json").read_text())
    copy.with_suffix(".json").write_text(
        json.dumps({**record, **change} if isinstance(change, dict) else change)
    )
    with pytest.raises(CorruptDataError, match=match) as info:
        read_record(copy)
    assert str(copy.with_suffix(".json")) in str(info.value)


def test_changed_weights_are_refused(models, tmp_path):
    path, _ = models["shape"]
    copy = tmp_path / "shape.pt"
    copy.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 1]))
    copy.with_suffix(".json").write_text(path.with_suffix(".json").read_text())
    with pytest.raises(CorruptDataError, match="sha256"):
        load_model(copy)


def test_image_model_checks_channels_and_kinds(wells, models):
    w = wells[0]
    two = np.concatenate([w.image, w.image])
    with pytest.raises(InputError, match="channel"):
        apply_embeddings(two, w.labels, models["image"][0], spacing=w.spacing, device="cpu")
    with pytest.raises(InputError, match="two shape models"):
        apply_embeddings(
            w.image, w.labels, [models["shape"][0], models["shape"][0]], spacing=w.spacing, device="cpu"
        )


def test_image_model_takes_its_channels_by_name(wells, models):
    # the model was trained on ("DAPI",); an image with more channels, named, needs no selection
    w = wells[0]
    model = models["image"][0]
    alone = apply_embeddings(w.image, w.labels, model, spacing=w.spacing, device="cpu")
    other = w.image[::-1, :, ::-1] * 0.5  # a different channel in front
    three = np.concatenate([other, w.image, other])
    picked = apply_embeddings(
        three, w.labels, model, spacing=w.spacing, device="cpu", channel_names=("GFP", "Dapi", "RFP")
    )
    assert picked.equals(alone)
    with pytest.raises(InputError, match=r"trained on 1 channel\(s\) \['DAPI'\].*'GFP', 'RFP'"):
        apply_embeddings(
            three[::2], w.labels, model, spacing=w.spacing, device="cpu", channel_names=("GFP", "RFP")
        )
    with pytest.warns(UserWarning, match="differ from the model's"):  # one channel: used, with a warning
        renamed = apply_embeddings(
            w.image, w.labels, model, spacing=w.spacing, device="cpu", channel_names=("Hoechst",)
        )
    assert renamed.equals(alone)


def test_bad_training_requests(samples, tmp_path):
    with pytest.raises(InputError, match="kind"):
        train_embedding_model(samples, "texture", tmp_path / "m.pt")
    with pytest.raises(InputError, match="no training images"):
        train_embedding_model([], "image", tmp_path / "m.pt")


@pytest.fixture
def no_training(monkeypatch):
    """Any work on the training data fails the test: a refused output is refused before it."""
    from dls_microscopy.features.embeddings import training

    def fail(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(training, "image_data", fail)
    monkeypatch.setattr(training, "shape_data", fail)


@pytest.mark.parametrize("existing", ["m.pt", "m.json"])
def test_an_existing_model_is_refused_before_training(samples, tmp_path, no_training, existing):
    (tmp_path / existing).write_text("mine")
    with pytest.raises(OutputError, match=r"already exists.*--overwrite") as info:
        train_embedding_model(samples, "shape", tmp_path / "m.pt")
    assert str(tmp_path / existing) in str(info.value)
    assert (tmp_path / existing).read_text() == "mine"


def test_overwrite_replaces_an_existing_model(samples, fast, tmp_path):
    model = tmp_path / "m.pt"
    model.write_text("old")
    model.with_suffix(".json").write_text("old")
    record = train_embedding_model(samples, "shape", model, seed=5, overwrite=True, **{**fast, "epochs": 1})
    assert sha256_file(model) == record.weights_sha256
    assert json.loads(model.with_suffix(".json").read_text())["weights_sha256"] == record.weights_sha256


def test_a_model_under_a_file_is_refused_before_training(samples, tmp_path, no_training):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="is not a folder"):
        train_embedding_model(samples, "shape", tmp_path / "notes.txt" / "m.pt")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_a_model_in_an_unwritable_folder_is_refused_before_training(samples, tmp_path, no_training):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="not writable"):
            train_embedding_model(samples, "shape", locked / "m.pt")
    finally:
        locked.chmod(0o755)


def test_training_takes_each_images_channels_by_name(wells, fast, tmp_path):
    """Two files listing the same stains in another order train the same model; a missing stain is refused."""

    def two(w, order):
        chans = {"DAPI": w.image[0], "GFP": (w.image[0].max() - w.image[0]).astype(w.image.dtype)}
        return TrainingSample(np.stack([chans[n] for n in order]), w.labels, w.spacing, order)

    short = {**fast, "epochs": 1}
    first = two(wells[0], ("DAPI", "GFP"))
    same = train_embedding_model(
        [first, two(wells[1], ("DAPI", "GFP"))], "image", tmp_path / "a" / "m.pt", seed=0, **short
    )
    swapped = train_embedding_model(
        [first, two(wells[1], ("GFP", "DAPI"))], "image", tmp_path / "b" / "m.pt", seed=0, **short
    )
    assert swapped.preprocessing["channels"] == ["DAPI", "GFP"]
    assert swapped.weights_sha256 == same.weights_sha256  # same crops: same bytes
    # names that do not match (a file without metadata) but as many channels: by position, as
    # inference does, with a warning: the same crops as the consistent order
    unnamed = two(wells[1], ("DAPI", "GFP"))
    unnamed = TrainingSample(unnamed.image, unnamed.labels, unnamed.spacing, ("channel_0", "channel_1"))
    with pytest.warns(UserWarning, match="training image 2: channel names"):
        by_position = train_embedding_model(
            [first, unnamed], "image", tmp_path / "c" / "m.pt", seed=0, **short
        )
    assert by_position.weights_sha256 == same.weights_sha256
    # another stain and another channel count: refused
    w = wells[1]
    three = TrainingSample(np.stack([w.image[0]] * 3), w.labels, w.spacing, ("DAPI", "RFP", "Cy5"))
    refused = r"training image 2 has channels \['DAPI', 'RFP', 'Cy5'\].*--channel"
    with pytest.raises(InputError, match=refused):
        train_embedding_model([first, three], "image", tmp_path / "bad.pt", seed=0, **short)
