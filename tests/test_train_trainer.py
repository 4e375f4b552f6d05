"""The training loop end to end on a tiny network: outputs, reproducibility, resume, QAT export,
list-file data and the CLI."""

import argparse
import json
import re

import numpy as np
import pytest

from model.darknet import load_darknet, load_weights, parse_cfg
from model.data.dataset import DarknetDataset
from model.data.synthetic import SyntheticDetection, write_darknet_dataset
from model.evaluate import evaluate_detections
from model.pipeline import infer_float, infer_int8
from model.quant import QuantizedNetwork, quantize_network
from model.train.cli import register_cli
from model.train.trainer import CALIB_STREAM, TEST_STREAM, evaluate, train

TINY_CFG = """
[net]
batch=4
subdivisions=2
width=32
height=32
channels=3
learning_rate=0.001
burn_in=2
max_batches=4
policy=steps
steps=3
scales=.1

[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=1

[convolutional]
size=1
stride=1
pad=1
filters=24
activation=linear

[region]
anchors = 1,1, 2,2, 3,3
bias_match=1
classes=3
coords=4
num=3
softmax=1
rescore=1
object_scale=5
thresh=.6
"""


@pytest.fixture
def cfg(tmp_path):
    p = tmp_path / "tiny.cfg"
    p.write_text(TINY_CFG)
    return p


def run(cfg, out, **kw):
    kw.setdefault("eval_every", 2)
    kw.setdefault("test_images", 4)
    return train(cfg, out, progress=False, **kw)


def synthetic_test_set(count, size=32, seed=0):
    """The trainer's synthetic test images for ``seed``: ``(image, (w, h), truths)`` items."""
    data = SyntheticDetection(seed=seed * 3 + TEST_STREAM, length=count, size=size)
    return [(image, (size, size), boxes) for image, boxes in (data[i] for i in range(count))]


def reference_map(cfg, weights, qnet, items):
    """VOC mAP@0.5 (all-point) of written weights and a quantized model, by another road than the
    trainer's: the weights file through the float reference (darknet's arithmetic, not the
    trainer's TrainNet) and ``qnet`` through the golden model, both decoded by model.pipeline as
    darknet's ``detector test`` does (with ``validate_detector``'s thresh 0.005 and NMS 0.45),
    scored by model.evaluate. Returns ``(float mAP, int8 mAP)``."""
    net = load_darknet(cfg, weights)

    def rows(dets):
        found = [(d.x, d.y, d.w, d.h, p, k) for d in dets for k, p in enumerate(d.probs) if p > 0]
        return np.array(found, np.float64).reshape(-1, 6)

    float_rows = [rows(infer_float(net, x, wh, 0.005).detections) for x, wh, _ in items]
    int8_rows = [rows(infer_int8(qnet, x, wh, 0.005).detections) for x, wh, _ in items]
    truths = [truth for _, _, truth in items]
    classes = net.region.classes
    return (evaluate_detections(float_rows, truths, classes).map_all,
            evaluate_detections(int8_rows, truths, classes).map_all)


def assert_reports_reference_map(metrics, float_map, int8_map):
    # The int8 road is the same integers decoded the same way: equal. The float one differs only
    # in float rounding (float32 in darknet's order against TrainNet's), which could swap two
    # nearly equal scores: 1e-4, a hundredth of the smallest mAP checked here.
    assert metrics["int8"]["map50_all_point"] == int8_map, (metrics, int8_map)
    assert metrics["float"]["map50_all_point"] == pytest.approx(float_map, abs=1e-4), metrics


def test_outputs_reproducibility_and_resume(cfg, tmp_path):
    straight = run(cfg, tmp_path / "s", max_batches=6)
    first = run(cfg, tmp_path / "r", max_batches=4)
    out = tmp_path / "r"
    for name in ("tiny_final.weights", "tiny_last.weights", "train_state.npz", "curves.png",
                 "pr_float.png", "pr_int8.png", "metrics.json", "tiny.cfg", "tiny.npz"):
        assert (out / name).exists(), name
    assert load_weights(parse_cfg(cfg), first.weights).seen == 4 * 4  # 4 images per update
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["batches"] == 4
    assert_reports_reference_map(metrics, *reference_map(
        cfg, first.weights, QuantizedNetwork.load(first.quantized), synthetic_test_set(4)))
    assert QuantizedNetwork.load(first.quantized).calibration["method"] == "max"

    resumed = run(cfg, out, max_batches=6)
    state = np.load(out / "train_state.npz")
    history = json.loads(state["meta"].tobytes().decode())["history"]
    assert history["batch"] == [1, 2, 3, 4, 5, 6]
    # Same seed, and momentum and data order restored: bit-identical to training straight
    # through (which also shows the run is reproducible from its seed).
    assert straight.weights.read_bytes() == resumed.weights.read_bytes()


def test_training_learns_and_reports_what_its_files_score(tmp_path):
    """100 batches at a learning rate that does not decay (the tiny cfg's drops tenfold after 3):
    the loss falls to a fraction of its start, and the mAP the run reports is what its written
    files score by the float reference and the golden model."""
    cfg = tmp_path / "learn.cfg"
    cfg.write_text(TINY_CFG.replace("learning_rate=0.001", "learning_rate=0.01")
                   .replace("burn_in=2", "burn_in=10").replace("steps=3\n", "steps=1000\n"))
    r = run(cfg, tmp_path / "l", max_batches=100, eval_every=100, test_images=32)
    state = np.load(tmp_path / "l" / "train_state.npz")
    loss = json.loads(state["meta"].tobytes().decode())["history"]["avg_loss"]
    # Measured: 131 at the first batch, 5.1 at the last (most boxes learn they hold no object).
    assert loss[-1] < loss[0] / 10, (loss[0], loss[-1])
    float_map, int8_map = reference_map(cfg, r.weights, QuantizedNetwork.load(r.quantized),
                                        synthetic_test_set(32))
    assert float_map > 0.005 and int8_map > 0.002  # measured 0.011 and 0.0068: not vacuous
    assert_reports_reference_map(r.metrics, float_map, int8_map)


def test_qat_exports_the_ranges_it_learned(cfg, tmp_path):
    r = run(cfg, tmp_path / "q", qat=True, qat_batches=3, max_batches=4)
    q = QuantizedNetwork.load(r.quantized)
    assert q.calibration == {"method": "qat", "steps": 3}
    # The checkpoint holds the ranges QAT learned; the exported int8 scales are those / 127.
    state = np.load(tmp_path / "q" / "train_state.npz")
    ranges = json.loads(state["meta"].tobytes().decode())["qat"]["ranges"]
    exported = {str(i): layer.out_scale * 127 for i, layer in enumerate(q.layers)
                if layer.kind == "convolutional" and not layer.output_int32}
    assert exported.keys() == ranges.keys()
    for index, learned in ranges.items():
        assert exported[index] == pytest.approx(learned, rel=1e-12), index
    test_set = synthetic_test_set(4)
    assert_reports_reference_map(r.metrics, *reference_map(cfg, r.weights, q, test_set))
    # The PTQ baseline: the float checkpoint taken when QAT started (after one batch of 4
    # images), calibrated by the quantizer on the trainer's 64 calibration images.
    checkpoint = tmp_path / "q" / "tiny_float.weights"
    assert load_weights(parse_cfg(cfg), checkpoint).seen == 4
    calib = SyntheticDetection(seed=CALIB_STREAM, length=64, size=32)
    ptq = quantize_network(load_darknet(cfg, checkpoint), [calib[i][0] for i in range(64)])
    _, ptq_map = reference_map(cfg, checkpoint, ptq, test_set)
    assert r.metrics["ptq_of_float_checkpoint"]["map50_all_point"] == ptq_map


def test_train_on_list_file_with_augmentation(cfg, tmp_path):
    lst = write_darknet_dataset(SyntheticDetection(seed=1, length=6, size=48), tmp_path / "d",
                                "train")
    r = run(cfg, tmp_path / "l", data=lst, valid=lst)
    assert r.metrics["test_images"] == 6  # the whole valid list
    # owlet eval on the written files scores what the run reported on its in-memory network.
    res = evaluate(cfg, r.weights, quantized=r.quantized, data=lst)
    for key in ("float", "int8"):
        assert res[key] == r.metrics[key], key
    valid = DarknetDataset(lst, 3, 32, 32)
    assert_reports_reference_map(r.metrics, *reference_map(
        cfg, r.weights, QuantizedNetwork.load(r.quantized),
        [valid.eval_item(i) for i in range(len(valid))]))


def test_cli_subcommands(cfg, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    out = tmp_path / "c"
    args = parser.parse_args(["train", "--cfg", str(cfg), "-o", str(out),
                              "--max-batches", "2", "--eval-every", "2", "--test-images", "4"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert f"weights: {out / 'tiny_final.weights'}\nquantized model: {out / 'tiny.npz'}" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    args = parser.parse_args(["eval", "--cfg", str(cfg), "--weights",
                              str(out / "tiny_final.weights"), "--quantized", str(out / "tiny.npz"),
                              "--test-images", "4"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    # What owlet eval prints for the written files is what training reported, to its 4 decimals.
    for key in ("float", "int8"):
        shown = re.search(rf"^{key}: .*?mAP@0\.5 all-point ([\d.]+)", printed, re.M | re.S)
        assert shown, printed
        assert float(shown.group(1)) == round(metrics[key]["map50_all_point"], 4), key
