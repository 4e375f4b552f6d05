"""A trainable view of a :class:`model.network.Network`.

:class:`TrainNet` runs the forward and backward passes of a darknet network made of
``[convolutional]``, ``[maxpool]``, ``[route]`` and ``[upsample]`` layers and its detection heads
(one final ``[region]``, or ``[yolo]`` layers anywhere), on NHWC batches. It trains
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
from model.network import (
    ConvLayer,
    MaxpoolLayer,
    Network,
    RegionLayer,
    RouteLayer,
    UpsampleLayer,
    YoloLayer,
)
from model.quant import quantize_bias, quantize_weights, shared_scale_groups
from model.train import layers as L
from model.train.qat import QATState, fake_quant_activation
from model.train.region import RegionStats, region_loss, region_targets
from model.train.yolo import yolo_loss, yolo_targets

__all__ = ["ConvBlock", "PoolBlock", "RouteBlock", "TrainNet", "UpsampleBlock", "head_loss"]

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
        The output is requantized to int8 (every conv but those feeding a head, which leave the
        engine as int32 accumulators, docs/fixed-point.md §7); QAT fake-quantizes exactly these.
    scale_group : tuple of int
        The convolutions whose outputs share one int8 scale with this one because a route
        concatenates them (:func:`model.quant.shared_scale_groups`); ``(index,)`` when alone.

    Attributes
    ----------
    grads : dict[str, ndarray]
        Accumulated ``dL/dθ`` per parameter name (``weights``, ``biases``, ``scales``), summed
        over every image since the last :meth:`zero_grad`.
    """

    def __init__(self, layer: ConvLayer, index: int, requantized: bool = True,
                 scale_group: tuple[int, ...] | None = None):
        if layer.activation not in ("leaky", "linear"):
            raise ValueError(f"layer {index}: activation {layer.activation!r} is not supported")
        self.layer = layer
        self.index = index
        self.requantized = requantized
        self.scale_group = scale_group or (index,)
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

    def out_scale(self, qat: QATState) -> float:
        """The int8 scale of the output in QAT: the largest range of the scale group, as
        :func:`model.quant.quantize_network` exports it. A member not observed yet (the first QAT
        batch) does not count."""
        return max(qat.scale(i) for i in self.scale_group if i in qat.ranges)

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
                y, mask = fake_quant_activation(y, self.out_scale(qat))
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


class RouteBlock:
    """A darknet ``[route]`` layer (no parameters): its sources concatenated in channel order."""

    def __init__(self, layer: RouteLayer, index: int, channels: list[int]):
        self.layer = layer
        self.index = index
        self.channels = channels

    def params(self):
        return []

    def zero_grad(self) -> None:
        pass

    def forward(self, xs: list[np.ndarray]) -> np.ndarray:
        """Shapes (B, H, W, C_i) -> (B, H, W, ΣC_i); see :func:`layers.route_forward`."""
        return L.route_forward(xs)

    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """One gradient per source, in ``layer.layers`` order."""
        return L.route_backward(dy, self.channels)


class UpsampleBlock:
    """A darknet ``[upsample]`` layer (no parameters)."""

    def __init__(self, layer: UpsampleLayer, index: int):
        self.layer = layer
        self.index = index

    def params(self):
        return []

    def zero_grad(self) -> None:
        pass

    def forward(self, x, train, qat=None, s_x=None):
        """Shape (B, H, W, C) -> (B, H·s, W·s, C); see :func:`layers.upsample_forward`."""
        return L.upsample_forward(x, self.layer.stride)

    def backward(self, dy):
        return L.upsample_backward(dy, self.layer.stride)


Head = RegionLayer | YoloLayer


def head_loss(out: np.ndarray, truths: list[np.ndarray], head: Head, seen: int,
              net_wh: tuple[int, int]):
    """One detection head's loss and gradient on the raw output of its convolution.

    Parameters
    ----------
    out : array, shape (B, H, W, channels)
    truths : list of B arrays, shape (T_b, 5)
    head : RegionLayer or YoloLayer
    seen : int
        Images seen including this batch (the region layer's prior-matching term).
    net_wh : (int, int)
        Network input width and height (the yolo anchors' unit).

    Returns
    -------
    loss : dict of float
    dout : array, same shape as ``out``
    stats : RegionStats
    """
    if isinstance(head, RegionLayer):
        targets, stats = region_targets(out, truths, head, seen)
        loss, dout = region_loss(out, targets, head)
    else:
        targets, stats = yolo_targets(out, truths, head, *net_wh)
        loss, dout = yolo_loss(out, targets, head)
    return loss, dout, stats


class TrainNet:
    """Forward, backward and loss of a darknet network with region or yolo heads.

    Parameters
    ----------
    network : Network
        Convolutional, maxpool, route and upsample layers; detection heads each right after a
        convolution: one final ``[region]``, or any number of ``[yolo]``. A head's output is only
        for the loss: no layer may read it.
    qat : QATState or None
        Turns fake quantization on (see :mod:`model.train.qat`).

    Attributes
    ----------
    heads : list of (int, RegionLayer or YoloLayer)
        ``network.heads``: the loss takes the raw output of layer ``index - 1`` for each.
    region : RegionLayer or None
        The region head of a YOLOv2 network.
    blocks : list
        One block per layer that is not a head, in layer order (``block.index`` is the layer).
    """

    def __init__(self, network: Network, qat: QATState | None = None):
        self.network = network
        self.heads: list[tuple[int, Head]] = network.heads
        if not self.heads:
            raise ValueError("the network has no [region] or [yolo] layer")
        if any(isinstance(h, RegionLayer) for _, h in self.heads) and (
                len(self.heads) > 1 or network.region is None):
            raise ValueError("a [region] layer must be the network's last layer and only head")
        self.region: RegionLayer | None = network.region
        self.qat = qat
        head_at = {i for i, _ in self.heads}
        for i, ly in enumerate(network.layers):
            if i in head_at and (i == 0 or not isinstance(network.layers[i - 1], ConvLayer)):
                raise ValueError(f"layer {i}: a detection head must follow a convolution")
            reads = ly.layers if isinstance(ly, RouteLayer) else (i - 1,)
            if i not in head_at and head_at.intersection(reads):
                raise ValueError(f"layer {i}: reads the output of a detection head")
        producers = {i - 1 for i in head_at}
        groups = {i: tuple(sorted(g)) for g in shared_scale_groups(network) for i in g}
        self.blocks: list[ConvBlock | PoolBlock | RouteBlock | UpsampleBlock] = []
        for i, ly in enumerate(network.layers):
            if i in head_at:
                continue
            if isinstance(ly, ConvLayer):
                self.blocks.append(ConvBlock(ly, i, requantized=i not in producers,
                                             scale_group=groups.get(i)))
            elif isinstance(ly, MaxpoolLayer):
                self.blocks.append(PoolBlock(ly, i))
            elif isinstance(ly, UpsampleLayer):
                self.blocks.append(UpsampleBlock(ly, i))
            elif isinstance(ly, RouteLayer):
                channels = [network.layers[k].out_shape[0] for k in ly.layers]
                self.blocks.append(RouteBlock(ly, i, channels))
            else:
                raise ValueError(f"layer {i}: {ly.kind} layers cannot be trained here")

    def params(self):
        """``(block, name, array, decays)`` for every trainable parameter."""
        return [(b, n, p, d) for b in self.blocks for n, p, d in b.params()]

    def zero_grad(self) -> None:
        for b in self.blocks:
            b.zero_grad()

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        """Raw output of the last head's convolution (the one head of a region network).

        Parameters
        ----------
        x : array, shape (B, H, W, C)
            Network input in [0, 1] (NHWC).
        train : bool

        Returns
        -------
        out : array, shape (B, Hg, Wg, channels of the head)
        """
        return self.forward_heads(x, train)[-1]

    def forward_heads(self, x: np.ndarray, train: bool) -> list[np.ndarray]:
        """Raw output of each head's convolution, in the order of :attr:`heads`; see
        :meth:`forward`."""
        outs = self.forward_all(x, train)
        return [outs[i] for i, _ in self.heads]

    def forward_all(self, x: np.ndarray, train: bool) -> list[np.ndarray]:
        """Every layer's output in darknet index order, NHWC; a head's entry is its input (the
        raw output of its convolution: the head's activations belong to the loss)."""
        s_in = None
        if self.qat is not None:
            x = (quantize_input(x) * INPUT_SCALE).astype(x.dtype)
            s_in = INPUT_SCALE
        outs: list[np.ndarray] = []
        scales: list[float | None] = []  # each output's int8 scale in QAT (None: not on a grid)
        blocks = iter(self.blocks)
        for i, ly in enumerate(self.network.layers):
            prev, s_prev = (outs[-1], scales[-1]) if i else (x, s_in)
            if isinstance(ly, RegionLayer | YoloLayer):
                outs.append(prev)
                scales.append(None)
                continue
            b = next(blocks)
            if isinstance(b, RouteBlock):
                # The sources share one scale (the scale groups): the first one's is the route's.
                outs.append(b.forward([outs[k] for k in ly.layers]))
                scales.append(scales[ly.layers[0]])
                continue
            outs.append(b.forward(prev, train, self.qat, s_prev))
            if isinstance(b, ConvBlock):
                quantized = self.qat is not None and b.requantized and self.qat.quantize_activations
                s_prev = b.out_scale(self.qat) if quantized else None
            scales.append(s_prev)
        return outs

    def backward(self, *douts: np.ndarray) -> np.ndarray | None:
        """Backpropagate ``dL/dout`` of each head through every block, accumulating parameter
        gradients.

        Parameters
        ----------
        *douts : arrays
            One per head, in the order of :attr:`heads`, shaped as :meth:`forward_heads`.

        Returns
        -------
        dx : array, shape (B, H, W, C)
            ``dL/dx`` for the network input.
        """
        grads: list[np.ndarray | None] = [None] * len(self.network.layers)

        def add(i, g):
            grads[i] = g if grads[i] is None else grads[i] + g

        for (i, _), d in zip(self.heads, douts, strict=True):
            add(i - 1, d)
        dx = None
        for b in reversed(self.blocks):
            g = grads[b.index]
            if g is None:
                continue  # nothing downstream of this layer reaches a head
            if isinstance(b, RouteBlock):
                for k, gk in zip(b.layer.layers, b.backward(g), strict=True):
                    add(k, gk)
            elif b.index:
                add(b.index - 1, b.backward(g))
            else:
                dx = b.backward(g)
        return dx

    def train_step(self, x, truths, seen):
        """Forward, every head's loss and backward on one (sub)batch in training mode.

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
            The heads' losses summed per key; see :func:`model.train.region.region_loss`,
            :func:`model.train.yolo.yolo_loss`.
        stats : RegionStats
            Summed over the heads.
        """
        _, h, w = self.network.input_shape
        loss: dict[str, float] = {}
        stats = RegionStats()
        douts = []
        for (_, head), out in zip(self.heads, self.forward_heads(x, train=True), strict=True):
            head_l, dout, st = head_loss(out, truths, head, seen, (w, h))
            for k, v in head_l.items():
                loss[k] = loss.get(k, 0.0) + v
            stats += st
            douts.append(dout)
        self.backward(*douts)
        return loss, stats
