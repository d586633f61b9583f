"""npe2 sample-data contributions: the synthetic nuclei volume and the real nuclei_1135 crop."""

from __future__ import annotations

from dls_microscopy.napari.layers import LayerData, labels_layer_data, volume_layer_data

__all__ = ["real_nuclei", "synthetic_nuclei"]


def synthetic_nuclei() -> list[LayerData]:
    """Seeded synthetic 2-channel nuclei (48×160×160, 1.0×0.3×0.3 µm) with ground truth."""
    from dls_microscopy.sample_data import make_synthetic_nuclei

    sample = make_synthetic_nuclei(seed=0)
    meta = {"dls_sample": "synthetic"}
    layers = volume_layer_data(sample.as_volume(), metadata=meta)
    layers.append(labels_layer_data(sample.as_volume(labels=True), name="ground truth", metadata=meta))
    return layers


def real_nuclei() -> list[LayerData]:
    """Real confocal nuclei (100³ crop of 1135, uint8) with its 54 gold-standard labels."""
    from dls_microscopy.sample_data import load_nuclei_1135
    from dls_microscopy.volume import volume_from_array

    sample = load_nuclei_1135()
    meta = {"dls_sample": "nuclei_1135"}
    image = volume_from_array(
        sample.image, axes=sample.axes, spacing=sample.spacing, channel_names=sample.channel_names
    )
    layers = volume_layer_data(image, name="nuclei_1135", metadata=meta)
    layers.append(labels_layer_data(sample.as_volume(labels=True), name="gold labels", metadata=meta))
    return layers
