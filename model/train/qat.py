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

from model.float_ref import fold_batchnorm
from model.golden import ACC_BITS, INPUT_SCALE
from model.network import ConvLayer, MaxpoolLayer, Network, RegionLayer
from model.quant import (
    QuantConv,
    QuantizationError,
    QuantizedNetwork,
    QuantMaxpool,
    QuantRegion,
    quantize_bias,
    quantize_weights,
    requant_parameters,
)

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
        ``ranges[i]`` is the learned ``T`` of conv layer ``i``'s output (``s_y = T/127``).

    Returns
    -------
    QuantizedNetwork
        Built with the quantizer's functions (fold, weights, bias, multipliers) and QAT's
        activation scales instead of a calibration pass; ``calibration`` records
        ``{"method": "qat", "steps": ...}``.

    Raises
    ------
    QuantizationError
        As :func:`model.quant.quantize_network` (multiplier or accumulator out of contract).
    """
    convs = [i for i, ly in enumerate(net.layers) if isinstance(ly, ConvLayer)]
    in_scale = INPUT_SCALE
    layers = []
    for i, ly in enumerate(net.layers):
        if isinstance(ly, MaxpoolLayer):
            layers.append(QuantMaxpool(ly.in_shape, ly.out_shape, ly.size, ly.stride, ly.padding,
                                       in_scale))
            continue
        if isinstance(ly, RegionLayer):
            layers.append(QuantRegion(ly))
            continue
        w_fold, b_fold = fold_batchnorm(ly)
        w_q, w_scale = quantize_weights(w_fold)
        bias = quantize_bias(b_fold, w_scale, in_scale)
        last = i == convs[-1]
        out_scale = None if last else qat.scale(i)
        if last:
            m_pos, m_neg, shift = (np.zeros(ly.filters, np.int64) for _ in range(3))
        else:
            try:
                m_pos, m_neg, shift = requant_parameters(w_scale * in_scale / out_scale,
                                                         ly.activation)
            except QuantizationError as exc:
                raise QuantizationError(f"layer {i}: {exc}") from exc
        q = QuantConv(
            in_shape=ly.in_shape, out_shape=ly.out_shape, size=ly.size, stride=ly.stride,
            padding=ly.padding, activation=ly.activation, weight=w_q,
            bias=bias.astype(np.int32), m_pos=m_pos, m_neg=m_neg, shift=shift,
            in_scale=in_scale, w_scale=w_scale, out_scale=out_scale, output_int32=last,
        )
        if q.accumulator_bits > ACC_BITS or np.abs(bias).max(initial=0) >= 2**31:
            raise QuantizationError(f"layer {i}: accumulator needs {q.accumulator_bits} bits")
        layers.append(q)
        in_scale = out_scale
    return QuantizedNetwork(net.input_shape, INPUT_SCALE, layers,
                            {"method": "qat", "steps": qat.step})
