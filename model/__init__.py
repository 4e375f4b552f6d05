"""Owlet model package: darknet I/O, float reference, quantizer, integer golden model."""
