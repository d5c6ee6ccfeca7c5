"""Small models and files the tests share."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository
SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
REAL_DATA = os.path.abspath(os.path.join(SHARED, "data", "msa-seg-track-train"))


def small_resunet(pools: str, filters=2, n_classes: int = 2):
    """A small untrained ResUNet with fixed weights: ``(Architecture, keras.Model)``."""
    import keras

    from temtool.model.architecture import Architecture, build_resunet

    keras.utils.set_random_seed(0)
    arch = Architecture.create(depth=len(pools.split(",")), pool=pools, filters=filters, n_classes=n_classes)
    return arch, build_resunet(arch)


def written(folder) -> list:
    """The files in an output folder, but temtool's record of which files it wrote there."""
    from temtool.inference.outputs import RECORD_FILE

    return [p for p in Path(folder).iterdir() if p.name != RECORD_FILE]
