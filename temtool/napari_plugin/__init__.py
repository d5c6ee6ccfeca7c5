"""temtool in napari (the ``napari`` extra): a reader that keeps the calibration, and a
"Segment particles" widget with a correct-and-retrain loop. Declared to napari by the npe2
manifest ``napari.yaml`` beside this file. A user interface like the command line: it calls
the library and shows what comes back."""
