"""A trainable view of a :class:`model.network.Network`.

:class:`TrainNet` runs the forward and backward passes of a darknet network made of
``[convolutional]``, ``[maxpool]`` and a final ``[region]`` layer, on NHWC batches. It trains
the arrays of the wrapped :class:`~model.network.ConvLayer` objects **in place**, so the
network can be saved with darknet's ``save_weights`` at any time.

With a :class:`~model.train.qat.QATState` attached, every convolution computes with fake-quantized
folded weights and biases and every requantized activation is fake-quantized (see
:mod:`model.train.qat`), so evaluation in QAT mode is the integer golden model's arithmetic
in float.
"""

from __future__ import annotations

import numpy as np

from model.float_ref import fold_batchnorm
from model.golden import INPUT_SCALE, quantize_input
from model.network import ConvLayer, MaxpoolLayer, Network, RegionLayer
from model.quant import quantize_bias, quantize_weights
from model.train import layers as L
from model.train.qat import QATState, fake_quant_activation
from model.train.region import region_loss, region_targets

__all__ = ["ConvBlock", "PoolBlock", "TrainNet"]

#: Darknet's rolling-statistics update: ``rolling = .99·rolling + .01·batch``.
#: Ref: darknet src/batchnorm_layer.c ``forward_batchnorm_layer``.
ROLLING_MOMENTUM = 0.99


class ConvBlock:
    """Convolution + optional batch norm + activation (one darknet ``[convolutional]``).

    Parameters
    ----------
    layer : ConvLayer
        Its ``weights``, ``biases``, ``scales``, ``rolling_mean`` and ``rolling_variance`` are
        trained in place.
    index : int
        Darknet layer index (keys the QAT ranges).
    requantized : bool
        The output is requantized to int8 (every conv but the last, which leaves the engine as
        int32 accumulators, docs/fixed-point.md §7); QAT fake-quantizes exactly these outputs.

    Attributes
    ----------
    grads : dict[str, ndarray]
        Accumulated ``dL/dθ`` per parameter name (``weights``, ``biases``, ``scales``), summed
        over every image since the last :meth:`zero_grad`.
    """

    def __init__(self, layer: ConvLayer, index: int, requantized: bool = True):
        if layer.activation not in ("leaky", "linear"):
            raise ValueError(f"layer {index}: activation {layer.activation!r} is not supported")
        self.layer = layer
        self.index = index
        self.requantized = requantized
        self.grads: dict[str, np.ndarray] = {}
        self.zero_grad()
        self._cache = None

    def params(self):
        """``(name, array, decays)`` per trainable parameter; decay applies to weights only."""
        out = [("weights", self.layer.weights, True), ("biases", self.layer.biases, False)]
        if self.layer.batch_normalize:
            out.append(("scales", self.layer.scales, False))
        return out

    def zero_grad(self) -> None:
        self.grads = {n: np.zeros_like(p) for n, p, _ in self.params()}

    def _update_rolling(self, mean: np.ndarray, var: np.ndarray) -> None:
        ly = self.layer
        ly.rolling_mean[...] = ROLLING_MOMENTUM * ly.rolling_mean + (1 - ROLLING_MOMENTUM) * mean
        ly.rolling_variance[...] = (
            ROLLING_MOMENTUM * ly.rolling_variance + (1 - ROLLING_MOMENTUM) * var
        )

    def forward(self, x, train, qat: QATState | None = None, s_x: float | None = None):
        """Forward pass.

        Parameters
        ----------
        x : array, shape (B, H, W, C)
        train : bool
            Batch statistics and rolling updates for batch norm (darknet ``net.train``).
        qat : QATState or None
            Fake quantization on if given.
        s_x : float or None
            Scale of ``x`` when ``x`` is on an int8 grid (QAT), which puts the bias on the
            accumulator grid ``s_w·s_x``.

        Returns
        -------
        y : array, shape (B, Ho, Wo, filters)
        """
        if qat is not None:
            return self._forward_qat(x, train, qat, s_x)
        ly = self.layer
        z, ccache = L.conv_forward(x, ly.weights, ly.stride, ly.padding)
        if ly.batch_normalize:
            if train:
                xhat, mean, var, bcache = L.batchnorm_forward(z)
                self._update_rolling(mean, var)
            else:
                denom = np.sqrt(ly.rolling_variance) + L.BN_EPS
                xhat, bcache = (z - ly.rolling_mean) / denom, denom
            pre = xhat * ly.scales + ly.biases
        else:
            xhat = bcache = None
            pre = z + ly.biases
        y = L.leaky_forward(pre) if ly.activation == "leaky" else pre
        self._cache = ("float", train, ccache, xhat, bcache, y)
        return y

    def _forward_qat(self, x, train, qat, s_x):
        ly = self.layer
        correction = None
        if ly.batch_normalize and train and not qat.frozen_bn:
            # Batch statistics from the float convolution keep BN's training behaviour honest;
            # the quantized path below is rescaled to them (the folding "correction").
            zf, _ = L.conv_forward(x, ly.weights, ly.stride, ly.padding)
            _, mean, var, _ = L.batchnorm_forward(zf)
            self._update_rolling(mean, var)
            correction = (mean.astype(np.float64), np.sqrt(var.astype(np.float64)) + L.BN_EPS)
        # The quantizer's own fold and weight quantization: the integers QAT trains with are
        # those it exports.
        w_fold, b_fold = fold_batchnorm(ly)
        w_int, s_w = quantize_weights(w_fold)
        wq = (w_int * s_w[:, None, None, None]).astype(x.dtype)
        z, ccache = L.conv_forward(x, wq, ly.stride, ly.padding)
        d_r = k = None
        if ly.batch_normalize:
            d_r = np.sqrt(np.asarray(ly.rolling_variance, np.float64)) + L.BN_EPS
            k = np.asarray(ly.scales, np.float64) / d_r  # dw_fold/dw, per output channel
        if correction is not None:
            mean, d_b = correction
            c = (d_r / d_b).astype(x.dtype)
            pre = z * c + (ly.biases - ly.scales * mean / d_b).astype(x.dtype)
        else:
            c = None
            if s_x is not None:
                b_fold = quantize_bias(b_fold, s_w, s_x) * (s_w * s_x)
            pre = z + b_fold.astype(x.dtype)
        y = L.leaky_forward(pre) if ly.activation == "leaky" else pre
        mask = None
        if self.requantized:
            if train:
                qat.observe(self.index, y)
            if qat.quantize_activations:
                y, mask = fake_quant_activation(y, qat.scale(self.index))
        self._cache = ("qat", ccache, wq, k, d_r, correction, c, y, mask)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Backward pass: accumulates parameter gradients, returns ``dL/dx``.

        Parameters
        ----------
        dy : array, shape (B, Ho, Wo, filters)

        Returns
        -------
        dx : array, shape (B, H, W, C)
        """
        if self._cache[0] == "qat":
            return self._backward_qat(dy)
        _, train, ccache, xhat, bcache, y = self._cache
        ly = self.layer
        dpre = L.leaky_backward(dy, y) if ly.activation == "leaky" else dy
        self.grads["biases"] += dpre.sum(axis=(0, 1, 2))
        if ly.batch_normalize:
            self.grads["scales"] += (dpre * xhat).sum(axis=(0, 1, 2))
            dxhat = dpre * ly.scales
            dz = L.batchnorm_backward(dxhat, bcache) if train else dxhat / bcache
        else:
            dz = dpre
        dx, dw = L.conv_backward(dz, ccache, ly.weights)
        self.grads["weights"] += dw
        return dx

    def _backward_qat(self, dy):
        # STE through every rounding; the batch statistics of the correction are constants.
        _, ccache, wq, k, d_r, correction, c, y, mask = self._cache
        ly = self.layer
        if mask is not None:
            dy = np.where(mask, dy, 0)
        dpre = L.leaky_backward(dy, y) if ly.activation == "leaky" else dy
        db = dpre.sum(axis=(0, 1, 2))
        self.grads["biases"] += db
        dz = dpre * c if c is not None else dpre
        dx, dwq = L.conv_backward(dz, ccache, wq)
        if ly.batch_normalize:
            # w_fold = w·γ/D_R; the bias term is β - γ·mean/D with the batch mean and D_B in the
            # correction phase, the rolling mean and D_R once frozen.
            mean, d = correction if correction is not None else (ly.rolling_mean, d_r)
            self.grads["weights"] += dwq * k[:, None, None, None].astype(dy.dtype)
            dk = (dwq * ly.weights).sum(axis=(1, 2, 3))
            self.grads["scales"] += (dk / d_r - db * mean / d).astype(dy.dtype)
        else:
            self.grads["weights"] += dwq
        return dx


class PoolBlock:
    """A darknet ``[maxpool]`` layer (no parameters)."""

    def __init__(self, layer: MaxpoolLayer, index: int):
        self.layer = layer
        self.index = index
        self._cache = None

    def params(self):
        return []

    def zero_grad(self) -> None:
        pass

    def forward(self, x, train, qat=None, s_x=None):
        """Max pooling, shape (B, H, W, C) -> (B, Ho, Wo, C); see :func:`layers.maxpool_forward`."""
        y, self._cache = L.maxpool_forward(
            x, self.layer.size, self.layer.stride, self.layer.padding
        )
        return y

    def backward(self, dy):
        return L.maxpool_backward(dy, self._cache)


class TrainNet:
    """Forward, backward and loss of a conv/maxpool/region darknet network.

    Parameters
    ----------
    network : Network
        The last layer must be a :class:`RegionLayer`, the others convolutional or maxpool.
    qat : QATState or None
        Turns fake quantization on (see :mod:`model.train.qat`).
    """

    def __init__(self, network: Network, qat: QATState | None = None):
        if network.region is None:
            raise ValueError("the network must end with a [region] layer")
        self.network = network
        self.region: RegionLayer = network.region
        self.qat = qat
        self.blocks: list[ConvBlock | PoolBlock] = []
        last_conv = max(i for i, ly in enumerate(network.layers) if isinstance(ly, ConvLayer))
        for i, ly in enumerate(network.layers[:-1]):
            if isinstance(ly, ConvLayer):
                self.blocks.append(ConvBlock(ly, i, requantized=i != last_conv))
            elif isinstance(ly, MaxpoolLayer):
                self.blocks.append(PoolBlock(ly, i))
            else:
                raise ValueError(f"layer {i}: {ly.kind} layers cannot be trained here")

    def params(self):
        """``(block, name, array, decays)`` for every trainable parameter."""
        return [(b, n, p, d) for b in self.blocks for n, p, d in b.params()]

    def zero_grad(self) -> None:
        for b in self.blocks:
            b.zero_grad()

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        """Raw output of the last convolution.

        Parameters
        ----------
        x : array, shape (B, H, W, C)
            Network input in [0, 1] (NHWC).
        train : bool

        Returns
        -------
        out : array, shape (B, Hg, Wg, num·(coords+1+classes))
        """
        return self.forward_all(x, train)[-1]

    def forward_all(self, x: np.ndarray, train: bool) -> list[np.ndarray]:
        """Every block's output (darknet layers 0 .. n-2), NHWC; see :meth:`forward`."""
        s_x = None
        if self.qat is not None:
            x = (quantize_input(x) * INPUT_SCALE).astype(x.dtype)
            s_x = INPUT_SCALE
        outs = []
        for b in self.blocks:
            x = b.forward(x, train, self.qat, s_x)
            if self.qat is not None and isinstance(b, ConvBlock) and b.requantized:
                s_x = self.qat.scale(b.index) if self.qat.quantize_activations else None
            outs.append(x)
        return outs

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Backpropagate ``dL/dout`` through every block, accumulating parameter gradients.

        Returns
        -------
        dx : array, shape (B, H, W, C)
            ``dL/dx`` for the network input.
        """
        for b in reversed(self.blocks):
            dout = b.backward(dout)
        return dout

    def train_step(self, x, truths, seen):
        """Forward, region loss and backward on one (sub)batch in training mode.

        Parameters
        ----------
        x : array, shape (B, H, W, C)
        truths : list of B arrays, shape (T_b, 5)
            ``(x, y, w, h, class)``, normalized.
        seen : int
            Images seen including this batch (darknet ``net.seen``).

        Returns
        -------
        loss : dict of float
            See :func:`model.train.region.region_loss`.
        stats : RegionStats
        """
        out = self.forward(x, train=True)
        targets, stats = region_targets(out, truths, self.region, seen)
        loss, dout = region_loss(out, targets, self.region)
        self.backward(dout)
        return loss, stats
