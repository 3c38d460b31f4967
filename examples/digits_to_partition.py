"""Bring your own data: turn a folder of digit pictures into a partition file a collaborator trains on.

    python examples/digits_to_partition.py my-digits .fleet/data/data/digits/eu-west-hospital/digits.npz

reads ``my-digits/<label>/*.png`` (the sub-folder's name is the digit, 0-9), each a 28x28 picture (grey, RGB or
RGBA; a light digit on a dark background as MNIST has it, or dark on light with ``--dark-on-light``), and
writes one partition file (``images``: uint8 (N, 28, 28), grey levels 0-255; ``labels``: uint8 (N,)) at the
path given: a cluster's claimed path, mapped under the data root on this machine. It then reads the file back
as the collaborator will (`fleet.app.data.load_dataset`) and prints the count per digit, so that the cluster's
``samples`` claim can be set to the total.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from matplotlib.image import imread
from numpy.typing import NDArray

from fleet.app.data import DataError, load_dataset, write_partition

SIDE = 28


def grey_levels(picture: Path, dark_on_light: bool) -> NDArray[np.uint8]:
    """One picture as a (28, 28) array of grey levels 0-255, light digit on dark."""
    pixels = np.asarray(imread(picture), dtype=np.float64)
    if pixels.ndim == 3:  # RGB or RGBA: the mean of the colour channels
        pixels = pixels[..., :3].mean(axis=2)
    if pixels.shape != (SIDE, SIDE):
        raise ValueError(f"{picture}: expected a {SIDE}x{SIDE} picture, got {pixels.shape[1]}x{pixels.shape[0]}")
    if pixels.max() > 1.0:  # integer PNGs read as 0-255 by some back-ends
        pixels = pixels / 255.0
    if dark_on_light:
        pixels = 1.0 - pixels
    return np.rint(pixels * 255).astype(np.uint8)


def convert(source: Path, dark_on_light: bool = False) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Every ``<digit>/*.png`` under ``source``, in name order, and its label."""
    images, labels = [], []
    for digit in range(10):
        for picture in sorted((source / str(digit)).glob("*.png")):
            images.append(grey_levels(picture, dark_on_light))
            labels.append(digit)
    if not images:
        raise ValueError(f"{source}: expected pictures at {source}/<digit>/*.png, found none")
    return np.stack(images), np.asarray(labels, dtype=np.uint8)


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a folder of <digit>/*.png")
    parser.add_argument("output", type=Path, help="the partition file to write (.npz)")
    parser.add_argument("--dark-on-light", action="store_true", help="the pictures show dark digits on light")
    options = parser.parse_args(arguments)
    if options.output.suffix != ".npz":
        parser.error(f"{options.output}: expected a partition file name ending in .npz")
    try:
        images, labels = convert(options.source, options.dark_on_light)
        write_partition(options.output, images, labels)
        written = load_dataset(options.output)  # as the collaborator reads it
    except (ValueError, OSError, DataError) as error:
        print(f"digits_to_partition: {error}", file=sys.stderr)
        return 2
    counts = np.bincount(written.labels, minlength=10)
    print(f"wrote {options.output}: {len(written.labels)} images (claim samples: {len(written.labels)})")
    print("per digit 0-9: " + " ".join(str(int(n)) for n in counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
