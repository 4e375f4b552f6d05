"""The training loop, checkpoints, evaluation and export.

:func:`train` trains a darknet cfg from scratch (or from ``init_weights``) on the synthetic set or
a darknet list file, as darknet's ``train_detector`` does: ``batch`` images per update split into
``subdivisions`` forward/backward passes, SGD with momentum and decay, the ``steps`` policy with
burn-in. It prints darknet's figures on a progress bar, writes darknet-format checkpoints that it
resumes from, evaluates mAP periodically and draws the loss/mAP curves. With ``qat=True`` the last
part of the run is quantization-aware and the exported quantized model is exactly what QAT
computed; without it the quantized model comes from the quantizer's post-training calibration.

:func:`evaluate` prints mAP for the float network and the int8 golden model.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.darknet import load_weights, parse_cfg, save_weights
from model.data.augment import Augment
from model.data.dataset import DarknetDataset, SyntheticSource
from model.data.synthetic import CLASS_NAMES, SyntheticDetection
from model.detect import do_nms_sort, get_network_boxes, get_yolo_detections
from model.evaluate import EvalResult, evaluate_detections, plot_pr_curves
from model.float_ref import region_forward, yolo_forward
from model.golden import forward_int, quantize_input
from model.network import Network, RegionLayer, YoloLayer
from model.quant import QuantizedNetwork, quantize_network
from model.train.net import TrainNet
from model.train.optim import SGD, LRPolicy, init_conv_params
from model.train.qat import QATState, export_quantized
from model.train.region import RegionStats
from model.zoo import OWLET_TINY_CFG

__all__ = [
    "DEFAULT_CFG",
    "TrainResult",
    "evaluate",
    "evaluate_network",
    "train",
]

#: The default detector for the synthetic task (a repository file).
DEFAULT_CFG = OWLET_TINY_CFG
#: Darknet's ``validate_detector`` thresholds: keep nearly every box, NMS at 0.45.
EVAL_THRESH = 0.005
EVAL_NMS = 0.45
#: Seed offsets: the synthetic train and test sets never share a generator stream.
TRAIN_STREAM, TEST_STREAM, CALIB_STREAM = 0, 1, 2
#: A head's darknet inference output from its convolution's (C, H, W) output.
_HEAD_FORWARD = {RegionLayer: region_forward, YoloLayer: yolo_forward}


@dataclass
class TrainResult:
    """What :func:`train` produced; paths are inside ``outdir``."""

    weights: Path
    quantized: Path
    seconds: float
    batches: int
    metrics: dict = field(default_factory=dict)


def _detect(head_outs, heads, net_hw, img_wh) -> np.ndarray:
    """Darknet's validation detections of one image as rows ``(x, y, w, h, score, class)``.

    ``head_outs`` are the heads' darknet outputs (C, H, W); every head's boxes enter one NMS
    (Ref: darknet src/network.c ``fill_network_boxes``).
    ``get_network_boxes`` and ``do_nms_sort`` as darknet's ``validate_detector``: its swap of
    zero-objectness boxes to the end reorders the others, which decides ties in the NMS sort
    (frequent on the int8 model's discrete scores).
    """
    dets = []
    for out, head in zip(head_outs, heads, strict=True):
        decode = get_yolo_detections if isinstance(head, YoloLayer) else get_network_boxes
        dets += decode(out, head, net_hw[1], net_hw[0], img_wh[0], img_wh[1], EVAL_THRESH)
    dets = do_nms_sort(dets, heads[-1].classes, EVAL_NMS)
    rows = [(d.x, d.y, d.w, d.h, p, k) for d in dets for k, p in enumerate(d.probs) if p > 0]
    return np.array(rows, np.float64).reshape(-1, 6)


def evaluate_network(model, source, count: int, names=None, batch: int = 64) -> EvalResult:
    """mAP of a network on the first ``count`` evaluation items of ``source``.

    Parameters
    ----------
    model : TrainNet or QuantizedNetwork
        A :class:`TrainNet` runs in inference mode (float, or QAT fake-quant if it has a QAT
        state); a :class:`QuantizedNetwork` runs on the integer golden model.
    source : SyntheticSource or DarknetDataset
    count : int

    Returns
    -------
    EvalResult
    """
    dets, gts = [], []
    for start in range(0, count, batch):
        items = [source.eval_item(i) for i in range(start, min(start + batch, count))]
        if isinstance(model, QuantizedNetwork):
            at = [i for i, q in enumerate(model.layers) if q.kind in ("region", "yolo")]
            heads = [model.layers[i].layer for i in at]
            outs = []
            for x, _, _ in items:
                layer_outs = forward_int(model, quantize_input(x))
                outs.append([layer_outs[i] for i in at])
        else:
            heads = [h for _, h in model.heads]
            x = np.stack([x for x, _, _ in items]).transpose(0, 2, 3, 1)
            raw = [o.transpose(0, 3, 1, 2) for o in model.forward_heads(x, train=False)]
            outs = [[_HEAD_FORWARD[type(h)](r[k], h) for r, h in zip(raw, heads, strict=True)]
                    for k in range(len(items))]
        for out, (x, wh, truth) in zip(outs, items, strict=True):
            dets.append(_detect(out, heads, x.shape[1:], wh))
            gts.append(truth)
    return evaluate_detections(dets, gts, heads[-1].classes, names=names)


def _sources(network: Network, synthetic: bool, data, valid, seed: int, test_images: int):
    c, h, w = network.input_shape
    head = network.heads[-1][1]
    if synthetic:
        if h != w:
            raise ValueError(f"the synthetic set is square; the network input is {w}x{h}")
        mk = SyntheticDetection
        train = SyntheticSource(mk(seed=seed * 3 + TRAIN_STREAM, length=2**62, size=w))
        test = SyntheticSource(mk(seed=seed * 3 + TEST_STREAM, length=test_images, size=w))
        calib = SyntheticSource(mk(seed=seed * 3 + CALIB_STREAM, length=64, size=w))
        if head.classes != len(CLASS_NAMES):
            raise ValueError(f"the synthetic set has {len(CLASS_NAMES)} classes, the cfg "
                             f"{head.classes}")
        return train, test, calib, list(CLASS_NAMES)
    if data is None and valid is None:
        raise ValueError("give a list file (data=... or valid=...) or synthetic=True")
    classes = head.classes
    opts = network.options
    aug = Augment(jitter=float(head.options.get("jitter", 0.2)),
                  hue=float(opts.get("hue", 0)), saturation=float(opts.get("saturation", 1)),
                  exposure=float(opts.get("exposure", 1)))
    train = DarknetDataset(data, classes, w, h, aug) if data else None
    test = DarknetDataset(valid, classes, w, h) if valid else None
    return train, test, train or test, [str(k) for k in range(classes)]


def _plot_curves(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(history["batch"], history["avg_loss"], color="C0", label="avg loss / image")
    ax.set_xlabel("batch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    if history["eval_batch"]:
        ax2 = ax.twinx()
        ax2.plot(history["eval_batch"], history["map"], "o-", color="C1", label="mAP@0.5")
        ax2.set_ylabel("mAP@0.5 (VOC all-point)")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.12, right=0.88, bottom=0.12, top=0.95)
    fig.savefig(path)
    plt.close(fig)


def _save_state(path: Path, opt: SGD, history: dict, qat: QATState | None) -> None:
    arrays = {f"u{i}": u for i, u in enumerate(opt.state())}
    meta = {"history": history, "qat": asdict(qat) if qat else None}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _load_state(path: Path, opt: SGD):
    data = np.load(path, allow_pickle=False)
    opt.load_state([data[f"u{i}"] for i in range(len(opt.state()))])
    meta = json.loads(data["meta"].tobytes().decode())
    qat = meta["qat"]
    if qat is not None:
        qat["ranges"] = {int(k): v for k, v in qat["ranges"].items()}
        qat = QATState(**qat)
    return meta["history"], qat


def train(
    cfg_path: str | Path = DEFAULT_CFG,
    outdir: str | Path = "build/train",
    synthetic: bool = True,
    data: str | Path | None = None,
    valid: str | Path | None = None,
    init_weights: str | Path | None = None,
    qat: bool = False,
    qat_batches: int | None = None,
    seed: int = 0,
    max_batches: int | None = None,
    eval_every: int = 200,
    test_images: int = 500,
    resume: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Train a detector; ``owlet train`` calls this.

    Parameters
    ----------
    cfg_path : darknet cfg (conv/maxpool/route/upsample, region or yolo heads), default
        :data:`DEFAULT_CFG`
    outdir : output directory (created); checkpoints, curves, metrics and the models go here
    synthetic : train and test on the built-in synthetic set (ignored when ``data`` is given)
    data, valid : darknet list files for training and (optionally) evaluation
    init_weights : darknet ``.weights`` to start from (else darknet's random initialization)
    qat : make the last ``qat_batches`` batches quantization-aware and export what QAT learned
    qat_batches : default: all batches when starting from ``init_weights``, else 20 % of them
    seed : initialization, data order and synthetic-set seed: the run is reproducible from it
    max_batches : override the cfg's ``max_batches``
    eval_every : batches between evaluations and checkpoints
    test_images : size of the synthetic test set
    resume : continue from ``outdir``'s last checkpoint if there is one
    progress : show the progress bar

    Returns
    -------
    TrainResult
        ``weights`` is ``<cfg stem>_final.weights`` (darknet format), ``quantized`` the ``.npz``
        quantized model file; ``metrics`` holds float/int8 mAP (and PTQ mAP when ``qat``).
    """
    t0 = time.time()
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(cfg_path).stem
    net = parse_cfg(cfg_path)
    if not (out / f"{stem}.cfg").exists() or not (out / f"{stem}.cfg").samefile(cfg_path):
        shutil.copyfile(cfg_path, out / f"{stem}.cfg")
    if data is not None:
        synthetic = False
    if init_weights:
        load_weights(net, init_weights)
        net.seen = 0
    else:
        init_conv_params(net, np.random.default_rng(seed))
    policy = LRPolicy.from_options(net.options)
    max_batches = max_batches or policy.max_batches
    if max_batches <= 0:
        raise ValueError("max_batches must be positive (cfg [net] max_batches or argument)")
    batch = int(net.options.get("batch", 1))
    subdiv = int(net.options.get("subdivisions", 1))
    if batch % subdiv:
        raise ValueError(f"batch={batch} is not a multiple of subdivisions={subdiv}")
    mini = batch // subdiv
    if qat_batches is None:
        qat_batches = max_batches if init_weights else max_batches // 5
    qat_start = max_batches - qat_batches if qat else max_batches + 1

    last = out / f"{stem}_last.weights"
    state_path = out / "train_state.npz"
    resuming = resume and last.exists() and state_path.exists()
    if resuming:  # before TrainNet and SGD take references to the parameter arrays
        load_weights(net, last)
    tn = TrainNet(net)
    opt = SGD(tn.params(), float(net.options.get("momentum", 0.9)),
              float(net.options.get("decay", 0.0005)))
    history = {"batch": [], "avg_loss": [], "eval_batch": [], "map": []}
    if resuming:
        history, tn.qat = _load_state(state_path, opt)
    train_src, test_src, calib_src, names = _sources(net, synthetic, data, valid, seed,
                                                     test_images)
    count = len(test_src) if test_src is not None else 0

    start = net.seen // batch
    avg = history["avg_loss"][-1] if history["avg_loss"] else None
    bar = tqdm(total=max_batches, initial=start, disable=not progress, unit="batch",
               dynamic_ncols=True)
    for b in range(start, max_batches):
        if b >= qat_start and tn.qat is None:
            save_weights(net, out / f"{stem}_float.weights")  # the PTQ baseline
            tn.qat = QATState()
        tn.zero_grad()
        loss_sum, stats = {}, RegionStats()
        for _ in range(subdiv):
            if synthetic:
                idx = range(net.seen, net.seen + mini)
            else:  # a fresh permutation per epoch, from the seed: resumable and reproducible
                epoch, pos = divmod(net.seen, len(train_src))
                perm = np.random.default_rng([seed, epoch]).permutation(len(train_src))
                idx = [perm[(pos + k) % len(perm)] for k in range(mini)]
            # Augmentation draws depend only on (seed, images seen): resuming replays them.
            rng = np.random.default_rng([seed, net.seen])
            items = [train_src.sample(int(i), rng) for i in idx]
            x = np.stack([im for im, _ in items]).transpose(0, 2, 3, 1)
            net.seen += mini
            loss, st = tn.train_step(x, [bx for _, bx in items], net.seen)
            stats += st
            for k, v in loss.items():
                loss_sum[k] = loss_sum.get(k, 0.0) + v / batch
        lr = policy.rate(net.seen // batch)
        opt.step(lr, batch)
        if tn.qat is not None:
            tn.qat.step += 1
        avg = loss_sum["total"] if avg is None else 0.9 * avg + 0.1 * loss_sum["total"]
        history["batch"].append(b + 1)
        history["avg_loss"].append(avg)
        bar.update(1)
        bar.set_postfix_str(
            f"loss {loss_sum['total']:.3f} avg {avg:.3f} (coord {loss_sum['coord']:.3f} "
            f"obj {loss_sum['obj']:.3f} noobj {loss_sum['noobj']:.3f} cls {loss_sum['cls']:.3f}) "
            f"IoU {stats.avg_iou:.3f} recall {stats.avg_recall:.3f} lr {lr:.2g}"
            + (" QAT" if tn.qat is not None else "")
        )
        if (b + 1) % eval_every == 0 or b + 1 == max_batches:
            if test_src is not None:
                res = evaluate_network(tn, test_src, count, names)
                history["eval_batch"].append(b + 1)
                history["map"].append(res.map_all)
                bar.write(f"batch {b + 1}: mAP@0.5 {res.map_all:.4f} (11-pt {res.map_11:.4f}) "
                          f"{time.time() - t0:.0f} s")
            save_weights(net, last)
            _save_state(state_path, opt, history, tn.qat)
            _plot_curves(history, out / "curves.png")
    bar.close()
    train_seconds = time.time() - t0

    final = out / f"{stem}_final.weights"
    save_weights(net, final)
    calib = [calib_src.eval_item(i)[0] for i in range(min(len(calib_src), 64))]
    qnet = export_quantized(net, tn.qat) if tn.qat is not None else quantize_network(net, calib)
    qpath = out / f"{stem}.npz"
    qnet.save(qpath)
    metrics = {"train_seconds": round(train_seconds, 1), "batches": max_batches,
               "images": net.seen, "qat": tn.qat is not None}
    if test_src is not None:
        float_res = evaluate_network(TrainNet(net), test_src, count, names)
        int8_res = evaluate_network(qnet, test_src, count, names)
        plot_pr_curves(float_res, out / "pr_float.png", f"float mAP@0.5 {float_res.map_all:.4f}")
        plot_pr_curves(int8_res, out / "pr_int8.png", f"int8 mAP@0.5 {int8_res.map_all:.4f}")
        metrics.update(test_images=count, float=_summary(float_res), int8=_summary(int8_res))
        if tn.qat is not None and (out / f"{stem}_float.weights").exists():
            fnet = load_weights(parse_cfg(cfg_path), out / f"{stem}_float.weights")
            metrics["ptq_of_float_checkpoint"] = _summary(
                evaluate_network(quantize_network(fnet, calib), test_src, count, names))
        print(f"float: {float_res.summary()}\nint8 golden: {int8_res.summary()}")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return TrainResult(final, qpath, train_seconds, max_batches, metrics)


def _summary(res: EvalResult) -> dict:
    return {"map50_all_point": res.map_all, "map50_11_point": res.map_11,
            "coco_map": res.coco_map}


def evaluate(
    cfg_path: str | Path,
    weights: str | Path,
    quantized: str | Path | None = None,
    synthetic: bool = True,
    data: str | Path | None = None,
    seed: int = 0,
    test_images: int = 500,
    outdir: str | Path | None = None,
) -> dict:
    """mAP of the float network and of the int8 golden model; ``owlet eval`` calls this.

    Parameters
    ----------
    cfg_path, weights : the darknet network
    quantized : ``.npz`` quantized model; if absent the quantizer calibrates one (PTQ, ``max``)
    synthetic, data : the synthetic test set (``seed``, ``test_images``) or a darknet list file
    outdir : if given, PR-curve PNGs are written there

    Returns
    -------
    dict
        ``{"float": {...}, "int8": {...}}`` with VOC all-point / 11-point mAP@0.5 and COCO mAP.
    """
    net = load_weights(parse_cfg(cfg_path), weights)
    if data is not None:
        synthetic = False
    _, test_src, calib_src, names = _sources(net, synthetic, None, data, seed, test_images)
    if test_src is None:
        raise ValueError("evaluate needs a test list file (data=...) or synthetic=True")
    if quantized:
        qnet = QuantizedNetwork.load(quantized)
    else:
        qnet = quantize_network(net, [calib_src.eval_item(i)[0] for i in range(64)])
    count = len(test_src)
    out = {}
    for key, model in (("float", TrainNet(net)), ("int8", qnet)):
        res = evaluate_network(model, test_src, count, names)
        print(f"{key}: {res.summary()}")
        out[key] = _summary(res)
        if outdir:
            Path(outdir).mkdir(parents=True, exist_ok=True)
            plot_pr_curves(res, Path(outdir) / f"pr_{key}.png",
                           f"{key} mAP@0.5 {res.map_all:.4f}")
    return out
