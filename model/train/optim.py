"""Darknet's SGD and learning-rate policy.

Ref: darknet src/convolutional_layer.c ``update_convolutional_layer``, src/network.c
``get_current_rate``, src/parser.c ``parse_net_options``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LRPolicy", "SGD", "init_conv_params"]


@dataclass
class LRPolicy:
    """``policy=steps`` with burn-in, as darknet's ``get_current_rate``.

    During burn-in ``lr = learning_rate · (batch/burn_in)^power``; afterwards the rate is
    multiplied by ``scales[k]`` for every ``steps[k] <= batch``.

    Attributes
    ----------
    learning_rate : float
    burn_in : int
    power : float
    steps : tuple of int
    scales : tuple of float
    max_batches : int
    """

    learning_rate: float = 0.001
    burn_in: int = 0
    power: float = 4.0
    steps: tuple[int, ...] = ()
    scales: tuple[float, ...] = ()
    max_batches: int = 0

    @classmethod
    def from_options(cls, options: dict[str, str]) -> LRPolicy:
        """From a ``[net]`` section; only ``policy=steps`` (and ``constant``) are supported."""
        policy = options.get("policy", "constant")
        if policy not in ("steps", "constant"):
            raise ValueError(f"[net] policy={policy!r}: only 'steps' and 'constant' are supported")

        def ints(key):
            return tuple(int(float(v)) for v in options.get(key, "").split(",") if v.strip())

        def floats(key):
            return tuple(float(v) for v in options.get(key, "").split(",") if v.strip())

        steps, scales = (ints("steps"), floats("scales")) if policy == "steps" else ((), ())
        if len(steps) != len(scales):
            raise ValueError(f"[net] {len(steps)} steps but {len(scales)} scales")
        return cls(
            learning_rate=float(options.get("learning_rate", 0.001)),
            burn_in=int(options.get("burn_in", 0)),
            power=float(options.get("power", 4)),
            steps=steps,
            scales=scales,
            max_batches=int(options.get("max_batches", 0)),
        )

    def rate(self, batch_num: int) -> float:
        """Learning rate at update ``batch_num`` (darknet's ``get_current_batch``)."""
        if batch_num < self.burn_in:
            return self.learning_rate * (batch_num / self.burn_in) ** self.power
        rate = self.learning_rate
        for step, scale in zip(self.steps, self.scales, strict=True):
            if step > batch_num:
                break
            rate *= scale
        return rate


class SGD:
    """Darknet's SGD with momentum and weight decay on weights only.

    Darknet accumulates ``updates = -Σ dL/dθ`` over every image of a batch (all subdivisions),
    then per update::

        updates -= decay · batch · w          (weights only)
        w       += lr / batch · updates
        updates *= momentum                   (carried into the next batch)

    ``batch`` is images per update (``[net] batch``, i.e. minibatch × subdivisions).

    Parameters
    ----------
    params : list of (block, name, array, decays)
        As :meth:`model.train.net.TrainNet.params`; gradients are read from ``block.grads[name]``
        (sums over images, ``+dL/dθ``).
    momentum, decay : float
    """

    def __init__(self, params, momentum: float = 0.9, decay: float = 0.0005):
        self.params = params
        self.momentum = momentum
        self.decay = decay
        self.updates = [np.zeros_like(p) for _, _, p, _ in params]

    def step(self, lr: float, batch: int) -> None:
        """Apply one update with learning rate ``lr`` for ``batch`` images of gradients."""
        for (block, name, p, decays), u in zip(self.params, self.updates, strict=True):
            u -= block.grads[name]
            if decays:
                u -= self.decay * batch * p
            p += (lr / batch) * u
            u *= self.momentum

    def state(self) -> list[np.ndarray]:
        """The momentum buffers (for checkpoints)."""
        return self.updates

    def load_state(self, updates: list[np.ndarray]) -> None:
        for u, v in zip(self.updates, updates, strict=True):
            u[...] = v


def init_conv_params(network, rng: np.random.Generator) -> None:
    """Darknet's initialization of every conv layer, in place.

    Weights ``N(0, 1) · sqrt(2 / (size²·C))``, biases 0, BN scales 1, rolling mean 0, rolling
    variance 1 (darknet starts it at 0, which only matters before the first training batch).
    Ref: darknet src/convolutional_layer.c ``make_convolutional_layer``.
    """
    for ly in network.layers:
        if getattr(ly, "kind", None) != "convolutional":
            continue
        c = ly.in_shape[0]
        scale = np.sqrt(2.0 / (ly.size * ly.size * c))
        ly.weights = (rng.standard_normal(ly.weights.shape) * scale).astype(np.float32)
        ly.biases = np.zeros(ly.filters, np.float32)
        if ly.batch_normalize:
            ly.scales = np.ones(ly.filters, np.float32)
            ly.rolling_mean = np.zeros(ly.filters, np.float32)
            ly.rolling_variance = np.ones(ly.filters, np.float32)
