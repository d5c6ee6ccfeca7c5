"""temtool: find nanoparticles in TEM micrographs with residual UNets, count and size them,
and see why the network works.

The packages are the pipeline, each importing only those below it (``docs/architecture.md``):
``cli`` > ``study`` > ``inference`` > ``model`` > ``data`` > ``image``, with ``backend``,
``paths`` and ``errors`` beneath them all.
"""

__version__ = "0.1.0"
