import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # headless: no display, no OpenGL canvas

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def qapp():
    from qtpy.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


@pytest.fixture
def viewer(qapp):
    """napari's viewer model (layers, dims, the widget's view of the viewer) without a canvas."""
    from napari.components import ViewerModel

    return ViewerModel()
