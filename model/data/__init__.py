"""Owlet training data: darknet label files, augmentation, the synthetic detection set."""

__all__: list[str] = []
