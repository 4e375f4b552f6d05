"""Fake quantization for quantization-aware training (QAT), and the export of what it learned.

The forward pass in QAT computes, in float, the very integers of the fixed-point contract
(``docs/fixed-point.md``) by calling the quantizer's own functions: batch norm folded by
:func:`model.float_ref.fold_batchnorm`, weights by :func:`model.quant.quantize_weights` (per output
channel), biases by :func:`model.quant.quantize_bias`, the input by
:func:`model.golden.quantize_input`. Activations are fake-quantized per tensor with
:func:`fake_quant_activation`, ``s = T/127`` where ``T`` is a moving average of ``max|y|``.
The backward pass is the straight-through estimator (STE): the gradient passes the rounding
unchanged and is zero where an activation saturates.

:func:`export_quantized` turns the trained network and its learned ranges into the
:class:`~model.quant.QuantizedNetwork` the golden model runs, with the same functions, so no
second quantization pass changes a number QAT trained with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model.network import Network
from model.quant import QuantizedNetwork, quantize_network

__all__ = ["QATState", "export_quantized", "fake_quant_activation"]


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
        ``clamp(floor(y/s + 0.5), -128, 127) · s``.
    pass_mask : bool array, same shape
        The STE: where the value did not saturate the gradient passes, elsewhere it is zero.
    """
    q = np.floor(np.asarray(y, np.float64) / scale + 0.5)
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


def export_quantized(net: Network, qat: QATState) -> QuantizedNetwork:
    """The quantized network exactly as QAT computed it.

    Parameters
    ----------
    net : Network
        Trained with QAT (batch norm frozen), so its folded weights are the ones QAT used.
    qat : QATState
        ``ranges[i]`` is the learned ``T`` of conv layer ``i``'s output (``s_y = T/127``), for
        every requantized convolution.

    Returns
    -------
    QuantizedNetwork
        :func:`model.quant.quantize_network` with QAT's activation scales instead of a
        calibration pass; ``calibration`` records
        ``{"method": "qat", "steps": ...}``.

    Raises
    ------
    QuantizationError
        As :func:`model.quant.quantize_network` (multiplier or accumulator out of contract).
    """
    # max(T, 1e-8) / 127 is exactly the scale QAT trained with (QATState.scale); the ranges are
    # those of the requantized convolutions, and the quantizer gives a route's sources the
    # largest of their group, as ConvBlock.out_scale did in training.
    thresholds = {i: max(t, 1e-8) for i, t in qat.ranges.items()}
    qnet = quantize_network(net, thresholds=thresholds)
    qnet.calibration = {"method": "qat", "steps": qat.step}
    return qnet
