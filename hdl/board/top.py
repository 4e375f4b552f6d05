"""The board top: clocks and resets, the host bridge, the bus glue, the sequencer, LiteDRAM.

::

   bridge domain (48/50 MHz)       eng (ENGINE_MHZ)       dram (LiteDRAM's system clock)
   UARTBridge ─ decoder ─┬─ WishboneCDC ─► Sequencer.csr
                         ├─ WishboneCDC ───────────────────► LiteDRAM control port
                         └─ WishboneCDC ───────────────────► WishboneToAXI4 ─┐
                            Sequencer.axi ─► AXI4CDC ─────────────────► AXI4Arbiter
                                                     (ECPIX-5: AXI4Upsizer) ─► LiteDRAM AXI

``docs/board.md`` has the address map, the clocks and the DRAM initialisation.
"""

from amaranth import Module
from amaranth.hdl import DomainRenamer
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.axi import AXI4Signature, WishboneSignature
from hdl.board.axi_upsize import AXI4Upsizer
from hdl.board.cdc import AXI4CDC, WishboneCDC
from hdl.board.interconnect import AXI4Arbiter, Window, WishboneDecoder, WishboneToAXI4
from hdl.bridge import BusBridge, UARTBridge
from hdl.descriptor import EngineConfig
from hdl.sequencer import SEQ_CSR, Sequencer

__all__ = ["ADDRESS_MAP", "BoardGlue", "BoardTop", "board_word", "connect_wishbone"]

#: Byte windows of the bridge's bus (``docs/board.md``); the DRAM window's size is the board's.
ADDRESS_MAP = {"seq": 0x0000_0000, "dram_ctrl": 0x0001_0000, "dram": 0x8000_0000}
_SEQ_SIZE = 0x400  # 256 CSR words (SEQ_CSR)
_CTRL_SIZE = 0x1_0000  # LiteDRAM's CSR space (csr.csv)
assert SEQ_CSR.CYCLES * 4 < _SEQ_SIZE


def board_word(board_id, engine_mhz, cfg):
    """The ID answer's board word: board [31:24], engine MHz [23:16], P_ic [15:8], P_oc [7:0]."""
    return (board_id << 24) | (min(int(engine_mhz), 255) << 16) | (cfg.p_ic << 8) | cfg.p_oc


def connect_wishbone(m, master, slave):
    """Drive ``slave`` (an Out Wishbone port's peer) from ``master``, adapting address widths
    (zero extension or truncation: the decoder already checked the upper bits)."""
    m.d.comb += [
        slave.cyc.eq(master.cyc), slave.stb.eq(master.stb), slave.we.eq(master.we),
        slave.adr.eq(master.adr), slave.dat_w.eq(master.dat_w),
        master.dat_r.eq(slave.dat_r), master.ack.eq(slave.ack),
    ]


class BoardGlue(wiring.Component):
    """Everything between the pins, the sequencer and LiteDRAM, in domains ``bridge``, ``eng``
    and ``dram``: what the fast synthesis test builds on its own.

    Parameters
    ----------
    dram_size : int
        Bytes of DRAM (the DRAM window's size).
    dram_data_width : int
        LiteDRAM's AXI port width: 64 (ULX3S) or 128 (ECPIX-5, through :class:`AXI4Upsizer`).
    divisor : int or None
        UART clock cycles per bit (bridge clock / baud); None: no UART, the bridge's byte
        streams are ports (``host_rx``/``host_tx``, the board cosimulation feeds a byte per
        cycle: ``docs/board.md``, "Board cosimulation").
    board : int
        The ID answer's board word.
    rx_timeout : int
        Bridge cycles of silence that drop a frame (about 10 ms).

    Attributes
    ----------
    uart_rx : In(1), uart_tx : Out(1)
        With a ``divisor``.
    host_rx : In(stream.Signature(8)), host_tx : Out(stream.Signature(8))
        Without one: :class:`hdl.bridge.BusBridge`'s ``rx``/``tx`` (``bridge`` domain).
    seq_csr : Out(WishboneSignature(8, 32))   (``eng``)
    seq_axi : In(AXI4Signature(32, 64))        (``eng``)
    dram_ctrl : Out(WishboneSignature(14, 32)), dram_ctrl_err : In(1)   (``dram``)
    dram_axi : Out(AXI4Signature(32, dram_data_width))                 (``dram``)
    """

    def __init__(self, *, dram_size, dram_data_width=64, divisor=16, board=0,
                 rx_timeout=480_000):
        if dram_data_width not in (64, 128):
            raise ValueError(f"dram_data_width must be 64 or 128, not {dram_data_width!r}")
        self.windows = [Window("seq", ADDRESS_MAP["seq"], _SEQ_SIZE),
                        Window("dram_ctrl", ADDRESS_MAP["dram_ctrl"], _CTRL_SIZE),
                        Window("dram", ADDRESS_MAP["dram"], dram_size)]
        self.dram_data_width, self.divisor, self.board = dram_data_width, divisor, board
        self.rx_timeout = rx_timeout
        host = ({"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1)} if divisor is not None
                else {"host_rx": In(stream.Signature(8)), "host_tx": Out(stream.Signature(8))})
        super().__init__({
            **host,
            "seq_csr": Out(WishboneSignature(addr_width=8, data_width=32)),
            "seq_axi": In(AXI4Signature(addr_width=32, data_width=64)),
            "dram_ctrl": Out(WishboneSignature(addr_width=14, data_width=32)),
            "dram_ctrl_err": In(1),
            "dram_axi": Out(AXI4Signature(addr_width=32, data_width=dram_data_width)),
        })

    def elaborate(self, platform):
        m = Module()
        if self.divisor is not None:
            bridge = UARTBridge(divisor=self.divisor, board=self.board,
                                rx_timeout=self.rx_timeout)
        else:
            bridge = BusBridge(board=self.board, rx_timeout=self.rx_timeout)
        m.submodules.bridge = bridge = DomainRenamer("bridge")(bridge)
        m.submodules.decoder = dec = DomainRenamer("bridge")(WishboneDecoder(self.windows))
        m.d.comb += bridge.bus_err.eq(dec.err)
        if self.divisor is not None:
            m.d.comb += [bridge.rx.eq(self.uart_rx), self.uart_tx.eq(bridge.tx)]
        else:
            wiring.connect(m, wiring.flipped(self.host_rx), bridge.rx)
            wiring.connect(m, bridge.tx, wiring.flipped(self.host_tx))
        wiring.connect(m, bridge.bus, dec.bus)

        # ---- one Wishbone crossing per window -----------------------------------------------
        cdc = {}
        for win, domain in zip(self.windows, ("eng", "dram", "dram"), strict=True):
            cdc[win.name] = x = WishboneCDC(win.addr_width, m_domain="bridge", s_domain=domain)
            m.submodules[f"cdc_{win.name}"] = x
            wiring.connect(m, getattr(dec, win.name), x.m)
            m.d.comb += getattr(dec, f"{win.name}_err").eq(x.m_err)
        wiring.connect(m, cdc["seq"].s, wiring.flipped(self.seq_csr))
        wiring.connect(m, cdc["dram_ctrl"].s, wiring.flipped(self.dram_ctrl))
        m.d.comb += cdc["dram_ctrl"].s_err.eq(self.dram_ctrl_err)

        # ---- DRAM: the bridge's window and the sequencer share one AXI4 port -------------------
        m.submodules.wb2axi = wb2axi = DomainRenamer("dram")(WishboneToAXI4(addr_width=30))
        connect_wishbone(m, cdc["dram"].s, wb2axi.wb)
        m.d.comb += cdc["dram"].s_err.eq(wb2axi.wb_err)
        m.submodules.axi_cdc = axi_cdc = AXI4CDC(m_domain="eng", s_domain="dram")
        wiring.connect(m, wiring.flipped(self.seq_axi), axi_cdc.m)
        m.submodules.arbiter = arb = DomainRenamer("dram")(AXI4Arbiter())
        wiring.connect(m, axi_cdc.s, arb.m0)
        wiring.connect(m, wb2axi.axi, arb.m1)
        if self.dram_data_width == 128:
            m.submodules.upsizer = up = DomainRenamer("dram")(AXI4Upsizer())
            wiring.connect(m, arb.s, up.narrow)
            wiring.connect(m, up.wide, wiring.flipped(self.dram_axi))
        else:
            wiring.connect(m, arb.s, wiring.flipped(self.dram_axi))
        return m


class BoardTop(wiring.Component):
    """A whole board: its :mod:`hdl.board.boards` description provides the platform-specific
    clocks, pins and DRAM core; this connects them to :class:`BoardGlue` and the sequencer.

    Parameters
    ----------
    board : hdl.board.boards.Board
    engine_mhz : float
        The engine clock's target (the PLL gives the highest frequency not above it).
    cfg : EngineConfig, optional
    """

    def __init__(self, board, engine_mhz, cfg=None):
        self.board, self.engine_mhz = board, engine_mhz
        self.cfg = cfg or EngineConfig()
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        board = self.board
        clocks = board.clocks(m, platform, self.engine_mhz * 1e6)
        core = board.dram(m, platform)
        uart = platform.request("uart", 0)
        divisor = round(clocks["bridge"] / 3e6)
        glue = BoardGlue(dram_size=board.dram_size, dram_data_width=board.dram_data_width,
                         divisor=divisor, rx_timeout=int(clocks["bridge"] / 100),
                         board=board_word(board.board_id, clocks["eng"] / 1e6, self.cfg))
        m.submodules.glue = glue
        m.submodules.sequencer = seq = DomainRenamer("eng")(Sequencer(self.cfg))
        m.d.comb += [glue.uart_rx.eq(uart.rx.i), uart.tx.o.eq(glue.uart_tx)]
        wiring.connect(m, glue.seq_csr, seq.csr)
        wiring.connect(m, seq.axi, glue.seq_axi)
        connect_wishbone(m, glue.dram_ctrl, core.ctrl)
        m.d.comb += glue.dram_ctrl_err.eq(core.ctrl_err)
        for name, member in glue.dram_axi.signature.members.items():
            src, dst = getattr(glue.dram_axi, name), getattr(core.axi, name)
            if member.flow == wiring.Flow.Out:
                m.d.comb += dst.eq(src)  # addresses truncate to the DRAM's size
            else:
                m.d.comb += src.eq(dst)
        board.leds(m, platform, seq=seq, core=core)
        return m
