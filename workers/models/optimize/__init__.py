"""Cheaper variants of a model: convert, quantize, prune, distil, and compare them.

``make.convert_model`` (``inferq models convert``) picks the tool by the source:
TensorFlow's converter for a SavedModel or Keras model (``convert``), the LiteRT
quantizer for a ``.tflite`` file alone (``quantize_tflite``); ``register`` makes the
result a new variant of the same model, so a worker serves it as ``model:variant`` and
its cache keys stay apart from the other variants'. ``compare.compare_variants``
(``inferq models compare``) measures variants, each in a fresh process (``measure``).

Nothing here is imported by a serving worker: TensorFlow, the quantizer and
matplotlib load only when one of these functions runs.
"""
