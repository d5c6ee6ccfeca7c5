"""The study: metrics, tuned baselines, the evaluation protocol, training, evaluation, the
KerasTuner search and the receptive-field report."""
