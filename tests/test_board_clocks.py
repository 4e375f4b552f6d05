"""The board tops' clock constraints reach nextpnr (hdl/board/boards.py, "Clock constraints").

Before the fix, nextpnr warned ``net 'clk_sdr' does not exist in design, ignoring clock
constraint`` (also ``clk_eng``, ``litedram.user_clk``): yosys had merged the constrained wires
into the PLL's output bus. Fast: every ``FREQUENCY NET`` of the LPF names a wire that carries
yosys's ``keep`` in the RTLIL handed to yosys. Slow: synthesis and nextpnr ``--pack-only`` of the
ULX3S top, no constraint ignored."""

import re

import pytest

from hdl.board.boards import BOARDS
from hdl.board.top import BoardTop


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_constrained_clock_nets_are_kept(name, monkeypatch):
    monkeypatch.setenv("OPENFPGALOADER", "true")
    board = BOARDS[name]
    plan = board.platform().prepare(BoardTop(board, 40), name="owlet")
    text = {k: (v if isinstance(v, str) else v.decode()) for k, v in plan.files.items()
            if k in ("owlet.lpf", "owlet.il")}
    nets = re.findall(r'FREQUENCY NET "([^"]+)"', text["owlet.lpf"])
    assert "clk_eng" in nets and "litedram.user_clk" not in nets, nets
    top = text["owlet.il"].split("\nmodule \\owlet\n", 1)[1]
    for net in nets:
        assert re.search(rf"attribute \\keep 1\n(\s+attribute [^\n]*\n)*\s+wire [^\n]*\\{net}\n",
                         top), f"constrained net {net} has no keep attribute in the top module"


@pytest.mark.slow
def test_ulx3s_clock_constraints_reach_nextpnr():
    """Synthesis (about 5 minutes here) and nextpnr --pack-only of the ULX3S board top."""
    from hdl.board.build import check_constraints

    report = check_constraints("ulx3s", 30)
    assert report["ignored"] == [], report
    assert report["constrained"]["clk_eng"] == 30.0 and report["constrained"]["clk_sdr"] == 50.0
