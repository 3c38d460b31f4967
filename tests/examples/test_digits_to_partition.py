"""examples/digits_to_partition.py: pictures of digits become a partition file a collaborator reads as they were."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from fleet.app.data import load_dataset

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "digits_to_partition.py"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("digits_to_partition", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pictures(folder: Path, pictures: dict[int, list[np.ndarray]], *, light: bool = False) -> None:
    for digit, images in pictures.items():
        (folder / str(digit)).mkdir(parents=True)
        for index, image in enumerate(images):
            shown = 255 - image if light else image
            Image.fromarray(shown, mode="L").save(folder / str(digit) / f"{index:03d}.png")  # 8-bit grey PNG


def test_pictures_become_the_partition_the_collaborator_reads(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(1)
    images = {
        3: [rng.integers(0, 256, (28, 28)).astype(np.uint8) for _ in range(2)],
        7: [np.eye(28, dtype=np.uint8) * 255],
    }
    _pictures(tmp_path / "mine", images)
    output = tmp_path / "data" / "digits" / "eu-west-hospital" / "digits.npz"

    assert script.main([str(tmp_path / "mine"), str(output)]) == 0

    written = load_dataset(output.parent)  # the claimed folder, as `fleet run` hands it to the collaborator
    assert written.labels.tolist() == [3, 3, 7]
    np.testing.assert_array_equal(written.images, np.stack([*images[3], *images[7]]))
    out = capsys.readouterr().out
    assert f"wrote {output}: 3 images (claim samples: 3)" in out and "per digit 0-9: 0 0 0 2 0 0 0 1 0 0" in out


def test_dark_digits_on_light_are_turned_round(script: ModuleType, tmp_path: Path) -> None:
    image = np.zeros((28, 28), np.uint8)
    image[10:18, 12:16] = 200
    _pictures(tmp_path / "mine", {1: [image]}, light=True)
    assert script.main([str(tmp_path / "mine"), str(tmp_path / "p.npz"), "--dark-on-light"]) == 0
    np.testing.assert_array_equal(load_dataset(tmp_path / "p.npz").images[0], image)


def test_a_picture_of_another_size_is_named_and_nothing_is_written(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _pictures(tmp_path / "mine", {5: [np.zeros((28, 28), np.uint8), np.zeros((32, 32), np.uint8)]})
    assert script.main([str(tmp_path / "mine"), str(tmp_path / "p.npz")]) == 2
    assert f"{tmp_path / 'mine' / '5' / '001.png'}: expected a 28x28 picture, got 32x32" in capsys.readouterr().err
    assert not (tmp_path / "p.npz").exists()
