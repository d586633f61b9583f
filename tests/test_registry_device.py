"""Plugin registry and device choice."""

from __future__ import annotations

import pytest

from dls_microscopy.device import resolve_device
from dls_microscopy.errors import InputError
from dls_microscopy.registry import Registry
from dls_microscopy.segment import get_segmenter, segmenter_names


def test_builtin_segmenter_found_through_entry_point():
    assert "watershed" in segmenter_names()
    seg = get_segmenter("watershed", {"diameter_um": 6}, device="cpu")
    assert seg.params.diameter_um == 6
    assert seg.device == "cpu"


def test_unknown_segmenter_lists_available():
    with pytest.raises(InputError, match=r"no segmenter named 'nope'.*watershed"):
        get_segmenter("nope")


def test_runtime_registration_and_lazy_loading():
    reg: Registry[int] = Registry("dls_microscopy.no_such_group", "thing")
    calls = []
    reg.register("x", lambda: calls.append(1) or 42)
    assert reg.names() == ["x"]
    assert calls == []  # nothing loaded until asked
    assert reg.get("x") == 42 and reg.get("x") == 42
    assert calls == [1]


def test_device_resolution():
    import torch

    assert resolve_device("cpu").type == "cpu"
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu")


def test_parameter_errors_list_the_parameters_only_for_an_unknown_one():
    """A bad value names its problem; the 11 parameter names follow only an unknown name (GUI review)."""
    with pytest.raises(InputError) as info:
        get_segmenter("watershed", {"diameter_um": -3}, device="cpu")
    assert "diameter_um: " in str(info.value) and "(parameters:" not in str(info.value)
    with pytest.raises(InputError, match=r"diametre: unknown parameter \(parameters: diameter_um, "):
        get_segmenter("watershed", {"diametre": 3}, device="cpu")


def test_a_model_file_for_a_segmenter_without_weights_is_named_as_such():
    """``segment --model X`` with the default watershed: not 'unknown parameter model_path'."""
    with pytest.raises(InputError, match=r"segmenter 'watershed' takes no model file"):
        get_segmenter("watershed", {"model_path": "weights.pt"}, device="cpu")


def test_auto_on_a_machine_without_gpu_drivers_is_cpu_without_importing_torch(monkeypatch):
    """torch's import (seconds, ~0.6 GB for a CUDA build) only where a GPU may be."""
    import subprocess
    import sys

    from dls_microscopy import device

    code = (
        "import sys; from dls_microscopy import device; device._GPU_DEVICE_FILES = ('/nonexistent/gpu',); "
        "from dls_microscopy.segment import get_segmenter; "
        "seg = get_segmenter('watershed', {'diameter_um': 7}, device='auto'); "
        "print(seg.device, 'torch' in sys.modules)"
    )
    if sys.platform.startswith("linux"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.split() == ["cpu", "False"]
    # where a GPU driver's device file exists, torch decides
    asked = []
    monkeypatch.setattr(device, "_GPU_DEVICE_FILES", (__file__,))
    monkeypatch.setattr(device, "resolve_device", lambda d: asked.append(d) or "cuda")
    assert device.device_name("auto") == "cuda" and asked == ["auto"]
    assert device.device_name("cpu") == "cpu" and asked == ["auto"]
