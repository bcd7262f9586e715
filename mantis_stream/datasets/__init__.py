"""Readers for public data sets (C-MAPSS, FEMTO, NAB, IMS): files in, numpy out.

Each module reads one format and nothing else; no Kafka, no models. The
``replay``, ``detect`` and training commands, the evaluations and the tests use
them.
"""
