"""Signal processing for waveforms and scalar windows: pure numpy/scipy, no Kafka or Faust.

``framing`` cuts chunks into frames, ``spectral`` turns frames into vibration
features, ``stats`` summarises windows of scalar readings.
"""

from .framing import FrameAssembler, remove_dc
from .spectral import bearing_defect_frequencies, waveform_features
from .stats import window_features

__all__ = ["FrameAssembler", "bearing_defect_frequencies", "remove_dc", "waveform_features", "window_features"]
