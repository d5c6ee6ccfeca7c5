"""From micrographs to particles: the segmenter, tiling, model choice, classical segmenters,
measurement, outputs and the folder pipeline. Keras only in :mod:`temtool.inference.compiled`."""
