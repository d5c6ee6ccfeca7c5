"""Micrographs and datasets: readers and writers, the dataset layout, ``prepare``, the
simulator and its randomised recipe. No networks here."""
