"""Owlet: a bit-exact hardware/software co-design flow for quantized tiny-YOLO detectors."""

__version__ = "0.1.0"
