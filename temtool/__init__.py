"""temtool: find nanoparticles in TEM micrographs with residual UNets, count and size them,
and see why the network works.

The packages are the pipeline, each importing only those below it (``docs/architecture.md``):
``cli`` > ``study`` > ``inference`` > ``model`` > ``data`` > ``image``, with ``backend``,
``paths`` and ``errors`` beneath them all.

For a HyperSpy or RosettaSciIO signal in a notebook: ``temtool.segment_signal(signal)``.
"""

from temtool.version import __version__

__all__ = ["__version__", "segment_signal"]


def __getattr__(name: str):
    """``temtool.segment_signal`` (:func:`temtool.inference.signal.segment_signal`), imported on
    first use so that ``import temtool`` stays light."""
    if name == "segment_signal":
        from temtool.inference.signal import segment_signal

        return segment_signal
    raise AttributeError(f"module 'temtool' has no attribute {name!r}")
