"""decode_like_etl against the ETL's own decoding (Pillow), pixel for pixel."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
from PIL import Image  # noqa: E402

from pipeline.etl.sources import load_image  # noqa: E402
from pipeline.training.image_decoding import decode_like_etl  # noqa: E402

SIZE = 32
rng = np.random.default_rng(0)


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def noise(width: int, height: int, channels: int) -> Image.Image:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))


def mode(image: Image.Image, name: str, **info: object) -> Image.Image:
    converted = image.convert(name)
    converted.info.update(info)
    return converted


def sixteen_bit_gray(width: int, height: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))


def palette_with_transparency() -> Image.Image:
    image = noise(45, 38, 3).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    image.info["transparency"] = 3
    return image


EXACT = [
    ("png-small", noise(20, 13, 3), "PNG"),
    ("png-50x70", noise(50, 70, 3), "PNG"),  # the rows' pass first (Pillow 13's rule)
    ("png-33x100", noise(33, 100, 3), "PNG"),
    ("png-200x300", noise(200, 300, 3), "PNG"),  # ... and not here
    ("jpeg-40x50", noise(40, 50, 3), "JPEG"),
    ("png-width-equal", noise(32, 40, 3), "PNG"),
    ("png-large", noise(300, 200, 3), "PNG"),
    ("png-rgba", noise(50, 40, 4), "PNG"),
    ("png-gray", noise(50, 40, 1), "PNG"),
    ("png-la", mode(noise(50, 40, 4), "LA"), "PNG"),
    ("png-palette", noise(45, 38, 3).convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG"),
    ("png-palette-transparent", palette_with_transparency(), "PNG"),
    ("png-16-bit-gray", sixteen_bit_gray(50, 40), "PNG"),
    ("png-1-bit", noise(50, 40, 1).convert("1"), "PNG"),
    ("bmp", noise(50, 40, 3), "BMP"),
    ("gif", noise(50, 40, 3).convert("P", palette=Image.Palette.ADAPTIVE, colors=32), "GIF"),
    ("jpeg-gray", noise(60, 50, 1), "JPEG"),
    ("jpeg-draft-2", noise(100, 90, 3), "JPEG"),
    ("jpeg-draft-4", noise(200, 180, 3), "JPEG"),
    ("jpeg-draft-8", noise(400, 300, 3), "JPEG"),
]


def compare(image: Image.Image, fmt: str) -> np.ndarray:
    data = encoded(image, fmt)
    expected = np.asarray(load_image(data, SIZE)).astype(np.int64)
    got = decode_like_etl(tf.constant(data), SIZE).numpy().astype(np.int64)
    assert got.shape == (SIZE, SIZE, 3)
    return np.abs(expected - got)


@pytest.mark.parametrize(("name", "image", "fmt"), EXACT, ids=[case[0] for case in EXACT])
def test_bit_identical(name: str, image: Image.Image, fmt: str) -> None:
    diff = compare(image, fmt)
    assert diff.max() == 0, f"{name}: max abs diff {diff.max()}"


def with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "camera"  # another tag before it in IFD0
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_jpeg_is_turned_upright_by_its_exif_orientation(orientation: int) -> None:
    data = with_orientation(noise(48, 36, 3), orientation)
    expected = np.asarray(load_image(data, SIZE))
    got = decode_like_etl(tf.constant(data), SIZE).numpy()
    np.testing.assert_array_equal(got, expected)
    if orientation in (2, 3, 4, 5, 6, 7, 8):  # the test would pass without the turn: it must not
        unturned = decode_like_etl(tf.constant(encoded(Image.open(io.BytesIO(data)), "BMP")), SIZE).numpy()
        assert not np.array_equal(unturned, expected)


def test_the_orientation_is_read_in_both_byte_orders() -> None:
    from pipeline.training.image_decoding import exif_orientation

    def app1(tiff: bytes) -> bytes:
        block = b"Exif\x00\x00" + tiff
        return b"\xff\xd8\xff\xe1" + (len(block) + 2).to_bytes(2, "big") + block + b"\xff\xd9"

    # A TIFF header, IFD0 with one entry (tag 0x0112, SHORT, count 1, the value), no next IFD.
    big = b"MM\x00*\x00\x00\x00\x08\x00\x01" + b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00" + b"\x00" * 4
    little = b"II*\x00\x08\x00\x00\x00\x01\x00" + b"\x12\x01\x03\x00\x01\x00\x00\x00\x08\x00\x00\x00" + b"\x00" * 4
    assert int(exif_orientation(tf.constant(app1(big)))) == 6
    assert int(exif_orientation(tf.constant(app1(little)))) == 8
    assert int(exif_orientation(tf.constant(encoded(noise(8, 8, 3), "JPEG")))) == 1


def test_under_tf_function_and_map_fn() -> None:
    data = [encoded(noise(60, 45, 3), "PNG"), encoded(noise(200, 180, 3), "JPEG")]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def batch(values: Any) -> Any:
        return tf.map_fn(lambda value: decode_like_etl(value, SIZE), values, fn_output_signature=tf.uint8)

    got = batch(tf.constant(data)).numpy()
    for one, pixels in zip(data, got, strict=True):
        np.testing.assert_array_equal(pixels, np.asarray(load_image(one, SIZE)))
