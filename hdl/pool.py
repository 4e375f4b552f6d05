"""Maxpool after requantization (docs/fixed-point.md §5): the accumulator-bank walk in output
order, and the running max over a window."""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hdl.descriptor import Pool

__all__ = ["POOL_LATENCY", "PoolMax", "PoolWalker"]

#: Cycles from a window position into :class:`PoolMax` to its window's ``out_valid``: the
#: position registered, then the running max.
POOL_LATENCY = 2


class PoolWalker(wiring.Component):
    """Walks one row tile's accumulator bank in output order, one position per ``step``.

    Order: for each sub-group of ``p_ic`` channels (``n_sub`` of them), each output row of the
    tile (``rows``), each output column, each window position ``j``: the 2×2 window
    (``j = 2·dy + dx``) for a pool, four beats of the same pixel for int32 output, else one
    position. With ``upsample`` (int8, no pool: nearest ×2 on the write) each output row is
    walked twice and each pixel of it twice (``j`` = 0, 1), every position a window of its own
    (``first`` and ``last`` high), so the beats are the rows of the upsampled map in order.

    The window of output ``(py, px)`` starts at conv ``(py·s, px·s)`` (darknet's offset
    ``-(padding // 2)`` is 0 for size 2), stride ``s`` = 2 for 2×2/2, 1 otherwise; ``pos`` is low
    for positions past the bottom or right edge (they must never win). The bank holds conv rows
    from ``c0`` on, ``width`` pixels each: ``addr = (cy - c0)·width + cx``.

    ``start`` rewinds to the first position and takes the inputs: they must hold still from the
    cycle before ``start`` (the walk's first bounds are computed from them into registers the
    cycle before, so that ``start``, which fans out to every counter, meets no carry chain), and
    are read at ``start`` only. ``done`` is ``step`` at the last position of sub-group
    ``last_sub`` (the walk skips the sub-groups after it: the padding channels of a layer's
    last output-channel group).

    Every decision is a registered flag or a compare of two bits, and every address one adder
    from registers (the 125 MHz budget, ``docs/engine.md``): the loops count down to registered
    "last" flags, whose next values are computed one step ahead; the rows and columns a window
    reaches are tracked with their in-map flags (``cy < height`` for ``dy`` = 0 and 1, likewise
    ``cx``) instead of being compared after the additions.
    """

    def __init__(self, *, n_sub):
        self.n_sub = n_sub
        super().__init__({
            "start": In(1), "step": In(1), "pool": In(Pool), "out_int32": In(1), "upsample": In(1),
            "width": In(16), "height": In(16), "out_width": In(16), "rows": In(16), "c0": In(16),
            "last_sub": In(range(n_sub)),
            "addr": Out(24), "pos": Out(1), "first": Out(1), "last": Out(1), "j": Out(2),
            "sub": Out(range(n_sub)), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        # The layer's walk, latched at start.
        pooled, step2, up = Signal(), Signal(), Signal()
        j_last, width, height, c0 = Signal(2), Signal(16), Signal(16), Signal(16)
        cols_m1, rows_m1 = Signal(16), Signal(16)
        last_sub = Signal(range(self.n_sub))
        is_pool = self.pool != Pool.NONE
        is_s2 = self.pool == Pool.P2S2
        s_in = Mux(is_s2, 2, 1)
        w_s, h_s, h_s1 = Signal(signed(17)), Signal(signed(17)), Signal(signed(17))
        with m.If(self.start):
            m.d.sync += [
                last_sub.eq(self.last_sub),
                pooled.eq(is_pool), step2.eq(is_s2), up.eq(self.upsample),
                j_last.eq(Mux(is_pool | self.out_int32, 3, Mux(self.upsample, 1, 0))),
                width.eq(self.width), height.eq(self.height), c0.eq(self.c0),
                cols_m1.eq(self.out_width - 1), rows_m1.eq(self.rows - 1),
                # The next window's in-map tests compare the current column or row against
                # these (cx + s < width is cx < width - s), so no adder precedes a compare (an
                # add, a compare and the counters' select in one cycle were 10.7 ns routed).
                # Signed: a one-pixel map gives width - 2 = -1, which no column is below.
                w_s.eq(self.width - s_in), h_s.eq(self.height - s_in),
                h_s1.eq(self.height - s_in - 1),
            ]
        stride = Mux(step2, 2, 1)
        # Counters: columns and rows left (counting down to the "last" flags), the conv column
        # and row a window starts at (cx, cy) with their in-map flags (bit d: cx + d < width,
        # cy + d < height), cx + 1, and the bank addresses of conv rows cy and cy + 1.
        cols_left, rows_left = Signal(16), Signal(16)
        col_last, row_last = Signal(), Signal()
        cx, cx1, cy = Signal(16), Signal(16), Signal(16)
        cx_in, cy_in = Signal(2), Signal(2)
        row_addr, next_row_addr = Signal(24), Signal(24)
        rep = Signal()  # upsample: the second walk of output row py
        dy = pooled & self.j[1]
        dx = pooled & self.j[0]
        pix_end = self.j == j_last
        row_done = col_last & (rep | ~up)
        tile_end = row_done & row_last
        m.d.comb += [
            self.addr.eq(Mux(dy, next_row_addr, row_addr) + Mux(dx, cx1, cx)),
            self.pos.eq(cy_in.bit_select(dy, 1) & cx_in.bit_select(dx, 1)),
            self.first.eq((self.j == 0) | up),
            self.last.eq(pix_end | up),
            self.done.eq(self.step & pix_end & tile_end & (self.sub == last_sub)),
        ]

        def first_column(cols_m1, width):
            return [cols_left.eq(cols_m1), col_last.eq(cols_m1 == 0), cx.eq(0), cx1.eq(1),
                    cx_in.eq(Cat(width > 0, width > 1))]

        def first_row(rows_m1, c0, width, height):
            return [rows_left.eq(rows_m1), row_last.eq(rows_m1 == 0), cy.eq(c0),
                    cy_in.eq(Cat(c0 < height, c0 + 1 < height)),
                    row_addr.eq(0), next_row_addr.eq(width)]

        # The first bounds from the inputs, registered every cycle (the inputs hold still from
        # the cycle before start): the first column's and row's counts, flags and in-map tests
        first = [(cols_left, self.out_width - 1), (col_last, self.out_width == 1),
                 (cx_in, Cat(self.width > 0, self.width > 1)),
                 (rows_left, self.rows - 1), (row_last, self.rows == 1),
                 (cy_in, Cat(self.c0 < self.height, self.c0 + 1 < self.height))]
        ahead = [Signal.like(reg, name=f"{reg.name}_first") for reg, _ in first]
        m.d.sync += [q.eq(value) for q, (_, value) in zip(ahead, first, strict=True)]
        with m.If(self.start):
            m.d.sync += [self.sub.eq(0), self.j.eq(0), rep.eq(0), cx.eq(0), cx1.eq(1),
                         cy.eq(self.c0), row_addr.eq(0), next_row_addr.eq(self.width),
                         *(reg.eq(q) for (reg, _), q in zip(first, ahead, strict=True))]
        with m.Elif(self.step):
            m.d.sync += self.j.eq(self.j + 1)
            with m.If(pix_end):
                m.d.sync += [self.j.eq(0), cols_left.eq(cols_left - 1),
                             col_last.eq(cols_left == 1), cx.eq(cx + stride),
                             cx1.eq(cx1 + stride),
                             cx_in.eq(Cat(cx < w_s, cx1 < w_s))]
                with m.If(col_last):
                    m.d.sync += first_column(cols_m1, width)
                    with m.If(row_done):
                        row_step = Mux(step2, width << 1, width)
                        m.d.sync += [
                            rep.eq(0), rows_left.eq(rows_left - 1), row_last.eq(rows_left == 1),
                            cy.eq(cy + stride),
                            cy_in.eq(Cat(cy < h_s, cy < h_s1)),
                            row_addr.eq(row_addr + row_step),
                            next_row_addr.eq(next_row_addr + row_step),
                        ]
                    with m.Else():  # upsample: the same output row again, for row 2·py + 1
                        m.d.sync += rep.eq(1)
                    with m.If(tile_end):
                        m.d.sync += [*first_row(rows_m1, c0, width, height),
                                     self.sub.eq(self.sub + 1)]
        return m


class PoolMax(wiring.Component):
    """Running max of int8 lanes over one window: positions with ``pos`` low contribute -128,
    which never wins since every window holds a real position. ``out`` and ``out_valid`` are
    registers, :data:`POOL_LATENCY` cycles after the window's ``last`` position.

    The position (its lanes or -128) is registered before the running max, so each cycle holds
    one compare and one select: with the position select and the drain's int32/int8 select
    behind them in one cycle, this was an 11-cell, 12.5 ns routed path."""

    def __init__(self, lanes):
        layout = data.ArrayLayout(signed(8), lanes)
        self.lanes = lanes
        super().__init__({
            "valid": In(1), "first": In(1), "last": In(1), "pos": In(1), "y": In(layout),
            "out_valid": Out(1), "out": Out(layout),
        })

    def elaborate(self, platform):
        m = Module()
        layout = data.ArrayLayout(signed(8), self.lanes)
        cand = Signal(layout, reset_less=True)  # the registered position
        c_valid, c_first, c_last = Signal(), Signal(), Signal()
        m.d.sync += [c_valid.eq(self.valid), c_first.eq(self.first), c_last.eq(self.last),
                     cand.eq(Cat(Mux(self.pos, self.y[i], -128) for i in range(self.lanes)))]
        best = Signal(layout, reset_less=True)
        with m.If(c_valid):
            for i in range(self.lanes):
                m.d.sync += best[i].eq(Mux(c_first | (cand[i] > best[i]), cand[i], best[i]))
        m.d.sync += self.out_valid.eq(c_valid & c_last)
        m.d.comb += self.out.eq(best)
        return m
