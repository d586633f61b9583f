"""Weights come from a local file or cellpose's cache, never from the network."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch
from dls_microscopy.errors import FormatError, InputError, ModelNotFoundError

from dls_microscopy_cellpose import CellposeSegmenter
from dls_microscopy_cellpose.weights import cache_dirs, download_url, find_weights, sha256_file


def test_missing_explicit_file_says_where_and_how(tmp_path):
    missing = tmp_path / "models" / "cpsam_v2"
    with pytest.raises(ModelNotFoundError) as info:
        CellposeSegmenter(device="cpu", model_path=str(missing))
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.path == missing
    assert str(missing) in message and "never downloads" in message
    assert download_url("cpsam_v2") in message and "copy the file to" in message


def test_a_missing_model_of_ones_own_gets_no_download_address(tmp_path):
    """Only cellpose's published models can be fetched; for a file of one's own, check the path."""
    with pytest.raises(ModelNotFoundError) as info:
        find_weights(tmp_path / "my_nuclei_model.pt")
    msg = str(info.value)
    assert "not one of cellpose's published models" in msg and "huggingface" not in msg


def test_missing_cached_model_names_the_cache_folders(empty_model_cache, tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        CellposeSegmenter(device="cpu")  # default cpsam_v2, looked up in the caches
    message = str(info.value)
    home_cache = tmp_path / "home" / ".cellpose" / "models" / "cpsam_v2"
    assert str(empty_model_cache / "cpsam_v2") in message and str(home_cache) in message
    assert "$CELLPOSE_LOCAL_MODELS_PATH" in message and "--model PATH" in message
    assert download_url("cpsam_v2") in message


def test_cache_folders_env_first_then_home(empty_model_cache, tmp_path, monkeypatch):
    assert cache_dirs() == [empty_model_cache, tmp_path / "home" / ".cellpose" / "models"]
    monkeypatch.delenv("CELLPOSE_LOCAL_MODELS_PATH")
    assert cache_dirs() == [tmp_path / "home" / ".cellpose" / "models"]


def test_weights_found_in_cellpose_cache(empty_model_cache, tmp_path, tiny_weights):
    home_cache = tmp_path / "home" / ".cellpose" / "models"
    home_cache.mkdir(parents=True)
    shutil.copy(tiny_weights, home_cache / "cpsam_v2")
    assert CellposeSegmenter(device="cpu").weights_path == home_cache / "cpsam_v2"
    shutil.copy(tiny_weights, empty_model_cache / "cpsam_v2")  # the env folder comes first
    assert CellposeSegmenter(device="cpu").weights_path == empty_model_cache / "cpsam_v2"
    shutil.copy(tiny_weights, home_cache / "mine")
    assert find_weights(model_name="mine") == home_cache / "mine"
    assert find_weights("mine") == home_cache / "mine"  # --model NAME: a bare name


def test_missing_bare_model_name_lists_every_place_looked(empty_model_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError) as info:
        find_weights("cpsam")
    message = str(info.value)
    assert str(tmp_path / "cpsam") in message and str(empty_model_cache / "cpsam") in message


def test_model_name_is_a_file_name(empty_model_cache):
    with pytest.raises(InputError, match="model_path"):
        CellposeSegmenter(device="cpu", model_name="../elsewhere/cpsam")


def test_a_folder_is_not_a_weights_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match="is a folder"):
        CellposeSegmenter(device="cpu", model_path=str(tmp_path))


def test_a_folder_given_by_its_bare_name_is_not_a_weights_file(
    empty_model_cache, tmp_path, monkeypatch
):
    """--model mine, with ./mine a folder: it was said "not found" in the cache instead."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    with pytest.raises(ModelNotFoundError, match="is a folder, not a weights file") as info:
        find_weights("mine")
    assert str(info.value).startswith("mine: ")


@pytest.mark.parametrize(
    "content",
    [b"these are my notes\n", b"\x89PNG\r\n\x1a\n\x00\x00", b""],
    ids=["text", "png", "empty"],
)
def test_a_file_that_is_not_weights_is_refused_when_the_segmenter_is_made(tmp_path, content):
    """Not at the first block (a pipeline's every field failed, each with "101")."""
    path = tmp_path / "notes.pt"
    path.write_bytes(content)
    with pytest.raises(FormatError, match="cannot read the file as PyTorch weights") as info:
        CellposeSegmenter(device="cpu", model_path=str(path))
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_a_cached_file_that_is_not_weights_is_refused(empty_model_cache):
    (empty_model_cache / "cpsam_v2").write_bytes(b"<html>rate limited</html>")
    with pytest.raises(FormatError, match=r"not what torch\.save writes.*holds text"):
        find_weights()


def test_sha256_file(tmp_path):
    path = tmp_path / "w"
    path.write_bytes(b"x" * 10_000_000)
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def _segmenter_for(path):
    return CellposeSegmenter(device="cpu", model_path=str(path))


def test_a_file_that_is_not_weights_is_a_format_error(tmp_path):
    path = tmp_path / "cpsam_v2"
    path.write_bytes(b"<html>rate limited</html>")  # what a failed download may leave
    with pytest.raises(FormatError, match="cannot read the file as PyTorch weights"):
        _segmenter_for(path).provenance()


def test_cellpose3_and_dino_models_are_refused(tmp_path, tiny_weights):
    state = torch.load(tiny_weights, weights_only=True)
    old = {k: v for k, v in state.items() if k != "W2"}
    torch.save(old, tmp_path / "cyto3")
    with pytest.raises(FormatError, match="Cellpose 3"):
        _segmenter_for(tmp_path / "cyto3").provenance()
    torch.save({**state, "encoder.cls_token": torch.zeros(1, 1, 32)}, tmp_path / "cpdino")
    with pytest.raises(FormatError, match="DINO"):
        _segmenter_for(tmp_path / "cpdino").provenance()
    torch.save([state], tmp_path / "a_list")
    with pytest.raises(FormatError, match="not a state dict"):
        _segmenter_for(tmp_path / "a_list").provenance()
