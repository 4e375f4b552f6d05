"""``owlet run`` (firmware/driver_cli.py, firmware/driver.py): end to end on the simulated board,
and its refusals without one.

The end-to-end test runs the command as a user would (a subprocess; ``--sim`` starts the board
cosimulation, everything crosses the bridge) and holds it against the golden model: the JSON
detections equal :func:`model.pipeline.infer_int8`'s on the same quantized model and image,
every layer's output is bit-exact (``--check``), and the ``--bench`` split is printed. On the
small default model, two frames (about 60 s, plus the Verilator build once per RTL change);
``slow``: the real YOLOv3-tiny on dog.png, one frame (8.9 MB of weights uploaded a byte per
cycle, 29 engine layers; about 40 minutes).
"""

import json
import re
import socket
import subprocess
import sys
import threading

import pytest

from firmware.compiler import compile_network
from firmware.driver import BoardDriver, DriverError
from firmware.driver_cli import SIM_RUN_TIMEOUT, sim_run_timeout
from firmware.link import ID_MAGIC, Cmd, Link, TcpTransport, encode_answer
from hdl.descriptor import EngineConfig
from model.darknet import load_darknet
from model.pipeline import infer_int8, prepare_input
from model.quant import QuantizedNetwork, quantize_network
from model.zoo import MODELS
from owlet.cli import detections_doc, main


def _owlet(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "owlet.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def _golden_network(zoo):
    """The quantized network ``owlet run --model`` runs, made here without the driver: the
    zoo's ``<cfg>.npz`` if it has one, else the float network max-calibrated on its image."""
    npz = zoo.cfg.with_suffix(".npz")
    if npz.is_file():
        return QuantizedNetwork.load(npz)
    missing = [p for p in (zoo.cfg, zoo.weights) if not p.is_file()]
    if missing:
        pytest.fail(f"{missing[0]} is missing: run `make weights`", pytrace=False)
    net = load_darknet(zoo.cfg, zoo.weights)
    return quantize_network(net, [prepare_input(zoo.image, net.input_shape)[0]], "max")


# (model, frames, subprocess timeout in s): two frames of the small model exercise the
# upload-once path between frames; one of YOLOv3-tiny takes over half an hour already.
@pytest.mark.parametrize("model, frames, timeout", [
    pytest.param("owlet-tiny", 2, 900, id="owlet-tiny"),
    pytest.param("yolov3-tiny", 1, 3 * 3600, id="yolov3-tiny", marks=pytest.mark.slow),
])
def test_owlet_run_sim_end_to_end(tmp_path, model, frames, timeout):
    zoo = MODELS[model]
    qnet = _golden_network(zoo)
    proc = _owlet("run", "--sim", "--model", model, "--check", "--bench", str(frames), "--json",
                  "--out", str(tmp_path), str(zoo.image), timeout=timeout)
    err = proc.stderr
    # A mismatch is reported by the command as "layer L (darknet D) frame F: channel, row,
    # column at DRAM address: expected E, actual A" lines: show those before the log's tail.
    mismatches = "\n".join(line for line in err.splitlines() if ": expected " in line
                           or "values differ" in line)
    assert proc.returncode == 0, f"{mismatches}\n...\n{err[-4000:]}"
    x, size = prepare_input(zoo.image, qnet.input_shape)
    golden = json.loads(json.dumps(detections_doc(size, infer_int8(qnet, x, size).detections)))
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert docs == [golden], (proc.stdout, golden)  # stdout holds the JSON and nothing else
    assert golden["detections"], "the golden model finds nothing: a vacuous comparison"
    stem = zoo.image.stem
    assert json.loads((tmp_path / f"{stem}.json").read_text()) == golden
    assert (tmp_path / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The simulated board's engine: P_ic 8 x P_oc 16 (sim.board_cosim.BoardSim's default).
    layers = len(compile_network(qnet, EngineConfig(), reuse=False).layers)
    for k in range(frames):
        assert (f"frame {k} ({zoo.image.name}): {layers}/{layers} layers bit-exact against the "
                "golden model") in err, mismatches or err[-4000:]
    assert "program uploaded" in err and "DRAM initialised through the bridge" in err
    bench = err[err.index(f"bench: {frames} frames"):]
    print(bench)
    for phase in ("upload", "compute", "download", "decode"):
        assert re.search(rf"^  {phase} +\d+\.\d+s +[\d,]+ +[\d,]+$", bench, re.M), phase
    cycles = re.search(r"engine \(CYCLES CSR\): ([\d,]+) cycles = ([\d.]+) ms a frame at 100 MHz",
                       bench)
    assert cycles and abs(int(cycles[1].replace(",", "")) / 1e5 - float(cycles[2])) < 1e-3
    assert re.search(r"frames/s on this link", bench)
    # One row per engine layer: index, darknet layers covered (0+1, 8, id+9), cycles, ms, MB/s.
    assert len(re.findall(r"^ +\d+ +\w+(\+\d+)? +[\d,]+ +\d+\.\d{3} +\d+\.\d +\d+%$", bench,
                          re.M)) == layers, bench


def test_run_refuses_a_board_it_cannot_be(capsys):
    assert main(["run", "--sim", "--board", "ecpix5"]) == 2
    assert "--sim: the board cosimulation is a ULX3S, not ecpix5" in capsys.readouterr().err
    with socket.socket() as s:  # a port nobody listens on: no board at all
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["run", "--sim-port", str(port)]) == 1
    assert re.search(rf"owlet run: error: cannot connect to the simulated board at "
                     rf"127\.0\.0\.1:{port}", capsys.readouterr().err)


class _Bridge:
    """A bridge on 127.0.0.1 that answers ID with ``board_word`` and nothing else."""

    def __init__(self, board_word):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port, self.board_word = self.server.getsockname()[1], board_word
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self.server.accept()
        with conn:
            conn.settimeout(10.0)
            while frame := conn.recv(64):
                cmd, seq = frame[1], frame[2]
                if cmd != Cmd.ID:  # the driver must check the board before anything else
                    return
                words = [ID_MAGIC, 1 | 256 << 16, self.board_word]
                conn.sendall(encode_answer(cmd, seq, 0, 3, words))


@pytest.mark.parametrize("board_word, message", [
    (0x0264_0810, r"wrong board on tcp 127\.0\.0\.1:\d+: its board word 0x02640810 says "
                  r"ecpix5, expected ulx3s \(id 1\)"),
    (0x0164_0803, r"board word 0x01640803 on tcp 127\.0\.0\.1:\d+: P_ic 8, P_oc 3: p_oc must "
                  r"be a power of two"),
])
def test_driver_names_a_wrong_board(board_word, message):
    bridge = _Bridge(board_word)
    with Link(TcpTransport(bridge.port), timeout=2.0) as link:
        driver = BoardDriver(link, "ulx3s", say=lambda _: None)
        with pytest.raises(DriverError, match=message):
            driver.connect()


def test_sim_run_timeout_covers_a_large_network_and_keeps_the_default_for_a_small_one():
    """Worked answers: the small model (about 0.1 M engine cycles) keeps the 600 s default; the
    real YOLOv3-tiny's is longer than its slowest measured healthy run on the simulated board
    (429 s of compute on shared cores, before resident tiles halved its traffic: docs/board.md)
    with a factor of two to spare."""
    small = compile_network(_golden_network(MODELS["owlet-tiny"]), EngineConfig(), reuse=False)
    assert sim_run_timeout(small, 100.0) == SIM_RUN_TIMEOUT == 600.0
    big = compile_network(_golden_network(MODELS["yolov3-tiny"]), EngineConfig(), reuse=False)
    assert sim_run_timeout(big, 100.0) > 2 * 429
