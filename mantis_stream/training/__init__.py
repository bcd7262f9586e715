"""Offline training of the models in :mod:`mantis_stream.models` (numpy only).

``models`` holds what the agents run (inference, model files); the fitting
that turns run-to-failure histories into a model file lives here and is used by
``train-rul`` and the evaluations (``mantis_stream.evaluation``).
"""
