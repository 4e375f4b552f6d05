"""Owlet trainer: darknet layers with hand-written backprop, region loss, SGD, QAT."""

__all__: list[str] = []
