"""Clock generation on the ECP5: an EHXPLLL with up to four outputs, and its divider solver.

Ref: Lattice TN1263 *ECP5 and ECP5-5G sysCLOCK PLL/DCS/DCC Usage Guide*, section 4 (PLL
parameters) and table 4.1 (ranges): input 8-400 MHz, phase-detector frequency
``f_in / CLKI_DIV`` 3.125-400 MHz, VCO 400-800 MHz, outputs ``f_vco / CLKOx_DIV`` 3.125-400 MHz,
all dividers 1-128. The feedback comes from CLKOP (``FEEDBK_PATH="CLKOP"``), so
``f_CLKOP = f_pfd * CLKFB_DIV`` and ``f_vco = f_CLKOP * CLKOP_DIV``.

Phase: each output has a coarse phase ``CLKOx_CPHASE`` in VCO cycles (``CLKOx_DIV - 1`` is 0°) and
a fine phase ``CLKOx_FPHASE`` in eighths of a VCO cycle (TN1263 4.2.3, "Dynamic/static phase").
"""

from dataclasses import dataclass

from amaranth import Instance, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PLL", "PLLOutput", "PLLSolution", "solve_pll"]

_VCO = (400e6, 800e6)
_PFD = (3.125e6, 400e6)
_OUT = (3.125e6, 400e6)
_DIV = range(1, 129)
_PORTS = ("CLKOP", "CLKOS", "CLKOS2", "CLKOS3")


@dataclass(frozen=True)
class PLLOutput:
    """One requested output: its clock domain, frequency (Hz), phase (degrees) and how far below
    (``tolerance`` as a fraction) the achieved frequency may lie. Never above the request: a
    target is a ceiling timing must meet."""

    domain: str
    freq: float
    phase: float = 0.0
    tolerance: float = 0.0


@dataclass(frozen=True)
class PLLSolution:
    """Divider settings: ``clki_div``, ``clkfb_div``, ``vco`` (Hz) and, per output in request
    order, ``(port, div, cphase, fphase, achieved Hz)``."""

    clki_div: int
    clkfb_div: int
    vco: float
    outputs: tuple

    def freq(self, domain_index):
        """The achieved frequency (Hz) of the output requested at ``domain_index``."""
        return self.outputs[domain_index][4]


def solve_pll(f_in, outputs):
    """Dividers of an EHXPLLL for ``outputs`` (a list of :class:`PLLOutput`, the first on CLKOP).

    Each output gets the highest frequency not above its request; the first must be met within
    its tolerance; the others within theirs. Among solutions the one with the smallest total
    relative shortfall wins (then the higher VCO: less jitter, TN1263 4.1).

    Raises
    ------
    ValueError
        With the requests, if no divider setting meets them.
    """
    if not 1 <= len(outputs) <= 4:
        raise ValueError(f"an EHXPLLL has 1 to 4 outputs, not {len(outputs)}")
    best = None
    for clki_div in _DIV:
        pfd = f_in / clki_div
        if pfd < _PFD[0]:
            break
        if pfd > _PFD[1]:
            continue
        for clkfb_div in _DIV:
            f_op = pfd * clkfb_div
            if f_op > outputs[0].freq * (1 + 1e-9):
                break
            if f_op < outputs[0].freq * (1 - outputs[0].tolerance) - 1:
                continue
            for op_div in _DIV:
                vco = f_op * op_div
                if not _VCO[0] <= vco <= _VCO[1]:
                    continue
                settings = [(_PORTS[0], op_div, f_op)]
                for out in outputs[1:]:
                    div = max(1, -(-int(vco) // int(out.freq)))  # ceil: never above the request
                    while div <= 128 and vco / div > out.freq * (1 + 1e-9):
                        div += 1
                    f = vco / div
                    if div > 128 or f < out.freq * (1 - out.tolerance) - 1 or f < _OUT[0]:
                        break
                    settings.append((_PORTS[len(settings)], div, f))
                else:
                    cost = sum(1 - f / o.freq
                               for (_, _, f), o in zip(settings, outputs, strict=True))
                    key = (round(cost, 9), -vco)
                    if best is None or key < best[0]:
                        best = (key, clki_div, clkfb_div, vco, settings)
    if best is None:
        wanted = ", ".join(f"{o.domain} {o.freq / 1e6:g} MHz (-{o.tolerance:.0%})"
                           for o in outputs)
        raise ValueError(f"no EHXPLLL setting from {f_in / 1e6:g} MHz gives {wanted}")
    _, clki_div, clkfb_div, vco, settings = best
    outs = []
    for (port, div, f), out in zip(settings, outputs, strict=True):
        steps = round(out.phase / 360 * div * 8)  # eighths of a VCO cycle
        outs.append((port, div, div - 1 + steps // 8, steps % 8, f))
    return PLLSolution(clki_div, clkfb_div, vco, tuple(outs))


class PLL(wiring.Component):
    """An EHXPLLL with up to four clock outputs (domains and resets are the caller's).

    Parameters
    ----------
    f_in : float
        Input clock frequency (Hz).
    outputs : list of PLLOutput
        The first is on CLKOP (the feedback path).

    Attributes
    ----------
    clk_in : In(1)
    reset : In(1)
        RST of the PLL (active high).
    locked : Out(1)
        LOCK, asynchronous: synchronise it into each domain's reset.
    clk : Out(len(outputs))
        The clocks, in the order of ``outputs``.
    solution : PLLSolution
    """

    def __init__(self, f_in, outputs):
        self.f_in, self.requests = f_in, list(outputs)
        self.solution = solve_pll(f_in, self.requests)
        super().__init__({"clk_in": In(1), "reset": In(1), "locked": Out(1),
                          "clk": Out(len(self.requests))})

    def elaborate(self, platform):
        m = Module()
        sol = self.solution
        params = {
            "a_FREQUENCY_PIN_CLKI": f"{self.f_in / 1e6:g}",
            "a_ICP_CURRENT": "12", "a_LPF_RESISTOR": "8",  # as Lattice's tools set them
            "a_MFG_ENABLE_FILTEROPAMP": "1", "a_MFG_GMCREF_SEL": "2",
            "p_CLKI_DIV": sol.clki_div, "p_CLKFB_DIV": sol.clkfb_div,
            "p_FEEDBK_PATH": "CLKOP",
            "i_CLKI": self.clk_in, "i_RST": self.reset, "i_STDBY": 0,
            "i_PHASESEL0": 0, "i_PHASESEL1": 0, "i_PHASEDIR": 1, "i_PHASESTEP": 1,
            "i_PHASELOADREG": 1, "i_PLLWAKESYNC": 0,
            "o_LOCK": self.locked,
        }
        for i, (port, div, cphase, fphase, f) in enumerate(sol.outputs):
            params.update({
                f"p_{port}_ENABLE": "ENABLED", f"p_{port}_DIV": div,
                f"p_{port}_CPHASE": cphase, f"p_{port}_FPHASE": fphase,
                f"a_FREQUENCY_PIN_{port}": f"{f / 1e6:g}",
                f"o_{port}": self.clk[i],
                f"i_EN{port}": 1,
            })
        params["i_CLKFB"] = self.clk[0]  # FEEDBK_PATH CLKOP
        m.submodules.pll = Instance("EHXPLLL", **params)
        return m
