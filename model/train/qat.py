"""Fake quantization for quantization-aware training (QAT).

The fake-quant functions reproduce, in float, the integers of the fixed-point contract
(``docs/fixed-point.md``): the same folding, the same scale rules, the same rounding. Their
backward is the straight-through estimator (STE): the gradient passes unchanged through the
rounding and is zero where the value saturates.

- Input image: fixed scale 1/127, ``clamp(floor(x·127 + 0.5), 0, 127)`` (contract §1).
- Weights: batch norm folded as darknet normalizes, ``w' = w·γ/(sqrt(var) + 1e-6)``, then
  symmetric per output channel, ``s_w = max|w'|/127``, ``rint`` to [-127, 127] (contract §2).
- Biases: ``rint(b' / (s_w·s_x))`` (contract §3).
- Activations: per tensor, ``s = T/127`` with ``T`` a moving average of ``max|y|`` over training
  batches, ``clamp(floor(y/s + 0.5), -128, 127)`` (contracts §4 and §6: round half up, saturate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "INPUT_SCALE",
    "QATState",
    "fake_quant_activation",
    "fake_quant_bias",
    "fake_quant_input",
    "fake_quant_weights",
    "fold_bn",
]

#: The network input's fixed scale (contract §1).
INPUT_SCALE = 1.0 / 127.0


def fold_bn(weights, scales, rolling_mean, rolling_variance, biases):
    """Fold batch norm into weights and bias, in float64, exactly as the contract (§2).

    Parameters
    ----------
    weights : array, shape (O, C, K, K)
    scales, rolling_mean, rolling_variance, biases : arrays, shape (O,)

    Returns
    -------
    w_fold : float64 array, shape (O, C, K, K)
    b_fold : float64 array, shape (O,)
    k : float64 array, shape (O,)
        ``γ / (sqrt(var) + 1e-6)``, the per-channel factor applied to the weights.
    """
    d = np.sqrt(np.asarray(rolling_variance, np.float64)) + 1e-6
    k = np.asarray(scales, np.float64) / d
    w_fold = np.asarray(weights, np.float64) * k[:, None, None, None]
    b_fold = np.asarray(biases, np.float64) - np.asarray(rolling_mean, np.float64) * k
    return w_fold, b_fold, k


def fake_quant_weights(w: np.ndarray):
    """Symmetric per-output-channel int8 fake quantization of (folded) weights.

    Parameters
    ----------
    w : array, shape (O, C, K, K)

    Returns
    -------
    wq : float64 array, shape (O, C, K, K)
        ``w_q · s_w`` (real values on the int8 grid).
    w_int : int8 array, shape (O, C, K, K)
    s_w : float64 array, shape (O,)

    The per-channel maximum maps to ±127, so nothing saturates and the STE gradient is the
    identity.
    """
    w = np.asarray(w, np.float64)
    amax = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    s_w = np.where(amax > 0, amax / 127.0, 1.0)
    w_int = np.clip(np.rint(w / s_w[:, None, None, None]), -127, 127)
    return w_int * s_w[:, None, None, None], w_int.astype(np.int8), s_w


def fake_quant_bias(b: np.ndarray, s_acc: np.ndarray):
    """Bias on the accumulator grid ``s_w·s_x`` (contract §3); STE gradient is the identity.

    Parameters
    ----------
    b, s_acc : arrays, shape (O,)

    Returns
    -------
    bq : float64 array, shape (O,)
    """
    return np.rint(np.asarray(b, np.float64) / s_acc) * s_acc


def fake_quant_input(x: np.ndarray) -> np.ndarray:
    """The network input on its fixed 1/127 grid (contract §1), same dtype as ``x``."""
    q = np.clip(np.floor(np.asarray(x, np.float64) * 127.0 + 0.5), 0, 127)
    return (q * INPUT_SCALE).astype(x.dtype)


def fake_quant_activation(y: np.ndarray, scale: float):
    """Per-tensor int8 fake quantization with round half up and saturation.

    Parameters
    ----------
    y : array, any shape
    scale : float
        ``s = T/127``.

    Returns
    -------
    yq : array, same shape and dtype as ``y``
    pass_mask : bool array, same shape
        The STE: where the value did not saturate the gradient passes, elsewhere it is zero.
    """
    v = np.asarray(y, np.float64) / scale
    q = np.floor(v + 0.5)
    pass_mask = (q >= -128) & (q <= 127)
    return (np.clip(q, -128, 127) * scale).astype(y.dtype), pass_mask


@dataclass
class QATState:
    """Schedule and learned ranges of a QAT run.

    Attributes
    ----------
    warmup : int
        Batches during which activation ranges are only tracked; fake quantization of activations
        starts after them. Weights are fake-quantized from the first QAT batch.
    bn_freeze : int
        Batches after which batch-norm statistics stop updating and the folded weights use the
        rolling statistics only (before that, the batch-statistics correction applies).
    momentum : float
        Moving-average momentum of the activation ranges: ``T ← m·T + (1 - m)·max|y|``.
    step : int
        QAT batches done so far.
    ranges : dict[int, float]
        ``T`` per darknet layer index (conv layers that are requantized).
    """

    warmup: int = 50
    bn_freeze: int = 200
    momentum: float = 0.99
    step: int = 0
    ranges: dict[int, float] = field(default_factory=dict)

    @property
    def quantize_activations(self) -> bool:
        return self.step >= self.warmup

    @property
    def frozen_bn(self) -> bool:
        return self.step >= self.bn_freeze

    def observe(self, index: int, y: np.ndarray) -> None:
        """Update layer ``index``'s range with a training batch's ``max|y|``."""
        m = float(np.abs(y).max())
        old = self.ranges.get(index)
        self.ranges[index] = m if old is None else self.momentum * old + (1 - self.momentum) * m

    def scale(self, index: int) -> float:
        """Activation scale ``T/127`` of layer ``index``."""
        return max(self.ranges[index], 1e-8) / 127.0
