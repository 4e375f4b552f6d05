"""The suite stands alone: no test reads outside the repository (``tests/conftest.py``)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import conftest
from conftest import DATA_DIR, REPO_ROOT, outside_repository


def test_paths_outside_the_repository_are_recognised(tmp_path):
    assert outside_repository(REPO_ROOT.parent / "shared" / "reference" / "boxes.txt")
    assert outside_repository(Path.home() / ".cache" / "owlet")
    assert outside_repository(str(REPO_ROOT / ".." / "elsewhere"))
    # A clone inside the temporary directory does not make its neighbours temporary files.
    assert outside_repository(Path(tempfile.gettempdir()) / "shared" / "reference")
    assert not outside_repository(Path(tempfile.mkdtemp()) / "scratch.bin")
    assert not outside_repository(DATA_DIR / "darknet-tiny96" / "boxes.txt")
    assert not outside_repository(REPO_ROOT / "model" / "zoo" / "dog.png")
    assert not outside_repository(tmp_path / "out.png")


def test_an_open_outside_the_repository_is_recorded():
    probe = REPO_ROOT.parent / "owlet-guard-probe-that-does-not-exist"
    try:
        probe.read_bytes()
    except OSError:
        pass
    assert str(probe) in conftest._touched  # the audit hook saw it before the OS refused
    conftest._touched.clear()  # this test's own probe is not a violation


def test_no_test_names_a_place_outside_the_repository():
    pattern = re.compile(r"\.\./shared|shared/reference|OWLET_REFERENCE|expanduser|Path\.home")
    offenders = [f"{path.name}:{n}" for path in sorted((REPO_ROOT / "tests").glob("*.py"))
                 if path.name != Path(__file__).name
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if pattern.search(line)]
    assert not offenders, f"tests that read outside the repository: {offenders}"
