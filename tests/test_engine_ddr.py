"""The DDR model under cocotb, checked by cocotbext-axi's AxiMaster (also its cocotb 2.x smoke
test): data integrity against a shadow memory, read latency, error responses."""

import json
from dataclasses import asdict

import pytest

from sim.axi_wire import AxiWire
from sim.ddr import DdrTiming
from sim.runner import build_top, run_cocotb


@pytest.mark.parametrize("timing", [
    DdrTiming(latency=30),
    DdrTiming(latency=3, write_latency=9, ready_prob=0.4, rvalid_prob=0.5, seed=11),
], ids=["latency30", "backpressure"])
def test_ddr_model_against_axi_master(timing, request):
    build_dir = build_top(AxiWire, "axi_wire", "AxiWire()")
    _, ok = run_cocotb(build_dir, "axi_wire", "sim.ddr_cocotb", request.node.callspec.id,
                       {"OWLET_DDR_TIMING": json.dumps(asdict(timing))})
    assert ok, "see the cocotb log above"
