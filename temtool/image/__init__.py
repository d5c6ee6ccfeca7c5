"""Array helpers on NumPy and SciPy: normalisation, resampling, dihedral transforms, filters.
The lowest layer: imports nothing else of temtool but :mod:`temtool.errors`."""
