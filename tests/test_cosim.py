"""The whole network on the RTL (sequencer + engine, cocotb + Verilator) from one start.

Every layer's output region of DDR is compared with the golden model bit for bit as the sequencer
reports it done (the program reuses buffers), the final int32 map decoded on the host must give
the golden model's detections, and the analytic performance model must predict every layer's
cycle counter within 5 % (the only tolerance in these tests: it checks a model, not the RTL).
"""

import re

import pytest

from firmware.perf import PerfConfig, sequencer_overhead
from hdl.descriptor import EngineConfig
from model.quant import QuantizationError
from model.zoo import DEFAULT_IMAGE, DOG_IMAGE, REFERENCE_CFG, REFERENCE_WEIGHTS
from sim.cosim import CosimOptions, load_model, run_cosim

SUMMARY = re.compile(r"cosim: (\d+)/(\d+) layers bit-exact, (\d+) cycles, MAC utilization "
                     r"([\d.]+)%, projected ([\d.]+) fps at ([\d.]+) MHz")


def _check_run(report):
    assert not report.errors, "\n".join(report.errors[:20])
    assert all(r["exact"] for r in report.rows)
    assert report.status == {"status": 0b010, "error": 0, "layer": len(report.rows)}
    assert report.detections_equal
    match = SUMMARY.fullmatch(report.summary())
    assert match, report.summary()
    assert match.group(1) == match.group(2) == str(len(report.rows))
    assert int(match.group(3)) == report.cycles


def _check_perf_model(report):
    for r in report.rows:
        # Traffic is counted, not estimated: it must be exact.
        assert (r["bytes_read"], r["bytes_written"]) == (r["predicted_read"],
                                                         r["predicted_written"]), r
        assert abs(r["predicted"] - r["cycles"]) <= 0.05 * r["cycles"], r
    # The sequencer's own cycles between layers, from its CYCLES CSR.
    overhead = report.cycles - sum(r["cycles"] for r in report.rows)
    model = sequencer_overhead(EngineConfig(), PerfConfig()) * len(report.rows) + 1
    assert abs(overhead - model) <= 0.05 * overhead


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    # Random weights give low class probabilities: darknet's reference detections use 0.2.
    return run_cosim(CosimOptions(cfg=REFERENCE_CFG, weights=REFERENCE_WEIGHTS, image=DOG_IMAGE,
                                  thresh=0.2, outdir=tmp_path_factory.mktemp("cosim"),
                                  run_name="test-reference"), log=lambda _: None)


def test_reference_network_bit_exact_through_sequencer(reference_run):
    _check_run(reference_run)
    assert len(reference_run.rows) == 8
    assert reference_run.detections > 0  # the comparison of detections is not vacuous
    assert [p.suffix for p in reference_run.files] == [".png", ".png"]
    assert all(p.stat().st_size > 0 for p in reference_run.files)


def test_perf_model_matches_rtl_counters(reference_run):
    _check_perf_model(reference_run)


def test_qmodel_that_does_not_match_cfg_is_refused(tmp_path):
    """``owlet sim --qmodel M --cfg C`` runs M; a C that describes another network is an error
    (before anything is built), naming both files and the layer."""
    from model.zoo import DEFAULT_CFG, DEFAULT_QMODEL

    with pytest.raises(QuantizationError, match=r"owlet-tiny\.npz does not match .*ref-tiny\.cfg: "
                                                r"the input is 3x64x64 in the quantized model, "
                                                r"3x96x96 in the cfg"):
        load_model(CosimOptions(qmodel=DEFAULT_QMODEL, cfg=REFERENCE_CFG))
    qnet, x, size, image = load_model(CosimOptions(qmodel=DEFAULT_QMODEL, cfg=DEFAULT_CFG))
    assert x.shape == qnet.input_shape and image == DEFAULT_IMAGE


@pytest.mark.slow
def test_full_voc_416_bit_exact_through_sequencer(tmp_path):
    """tiny-YOLOv2-VOC 416x416 (random weights), 28 M cycles: also ``make sim-full``."""
    report = run_cosim(CosimOptions(full=True, thresh=0.2, outdir=tmp_path, run_name="test-voc"),
                       log=lambda _: None)
    _check_run(report)
    assert len(report.rows) == 9
    assert report.detections > 0
    _check_perf_model(report)
