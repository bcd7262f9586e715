"""Offline evaluations against public benchmarks (NAB for anomalies, C-MAPSS/FEMTO for RUL).

Plain functions over numpy arrays; the ``evaluate-*`` commands and the docs'
figures call them. Nothing here talks to Kafka.
"""
