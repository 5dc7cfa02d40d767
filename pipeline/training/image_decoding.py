"""Decode an image file in a TensorFlow graph to the pixels the ETL makes (`sources.load_image`).

Serving signatures call `decode_like_etl` so that a served model sees what it was
trained on: Pillow's JPEG draft scale (DCT 1/2, 1/4, 1/8, ISLOW), transparency
composited on white like `Image.alpha_composite`, 16-bit gray scaled to 8 bits,
and Pillow's fixed-point BILINEAR resample (Resample.c, PRECISION_BITS = 22),
in Pillow 13's order of the two passes, each rounded to uint8. Graph ops only: it saves in
a SavedModel and takes any input size.

A JPEG's EXIF orientation (tag 0x0112 of IFD0 in its APP1 Exif block, either byte order) is
applied after the decoding, as `ImageOps.exif_transpose` does. Not matched: GIF transparency
and CMYK JPEGs (tests/test_image_decoding.py).
"""

from __future__ import annotations

from typing import Any

BACKGROUND = (255, 255, 255)  # sources.BACKGROUND (kept equal; importing sources would pull Pillow)
PRECISION_BITS = 22  # Resample.c: 32 - 8 - 2


def _coefficients(tf: Any, in_size: Any, out_size: int) -> tuple[Any, Any, int | Any]:
    """Resample.c precompute_coeffs + normalize_coeffs_8bpc for the bilinear filter:
    (xmin [out] int32, fixed-point weights [out, ksize] int64, ksize)."""
    in_f = tf.cast(in_size, tf.float64)
    scale = in_f / float(out_size)
    filterscale = tf.maximum(scale, 1.0)
    support = filterscale  # bilinear support 1.0
    ksize = tf.cast(tf.math.ceil(support), tf.int32) * 2 + 1
    center = (tf.range(out_size, dtype=tf.float64) + 0.5) * scale
    xmin = tf.maximum(tf.cast(center - support + 0.5, tf.int32), 0)  # C (int) truncates
    xmax = tf.minimum(tf.cast(center + support + 0.5, tf.int32), tf.cast(in_size, tf.int32)) - xmin
    ss = 1.0 / filterscale
    taps = tf.range(ksize)
    arg = (tf.cast(taps[None, :] + xmin[:, None], tf.float64) - center[:, None] + 0.5) * ss
    weight = tf.maximum(1.0 - tf.abs(arg), 0.0)
    weight = tf.where(taps[None, :] < xmax[:, None], weight, 0.0)

    # ww summed tap by tap, in C's order (float addition is not associative)
    def add(i: Any, total: Any) -> tuple[Any, Any]:
        return i + 1, total + weight[:, i]

    _, ww = tf.while_loop(lambda i, _: i < ksize, add, (tf.constant(0), tf.zeros([out_size], tf.float64)))
    weight = tf.where(ww[:, None] != 0.0, weight / ww[:, None], weight)
    fixed = tf.cast(tf.floor(0.5 + weight * float(1 << PRECISION_BITS)), tf.int64)
    return xmin, fixed, ksize


def _resample_axis(tf: Any, image: Any, axis: int, out_size: int) -> Any:
    """One Resample.c pass along `axis` (0 rows, 1 columns) of a uint8 [H, W, C] image."""
    in_size = tf.shape(image)[axis]
    xmin, fixed, ksize = _coefficients(tf, in_size, out_size)
    pixels = tf.cast(image, tf.int64)
    shape = tf.tensor_scatter_nd_update(tf.shape(image), [[axis]], [out_size])

    def add(i: Any, total: Any) -> tuple[Any, Any]:
        index = tf.minimum(xmin + i, in_size - 1)
        taken = tf.gather(pixels, index, axis=axis)
        weight = fixed[:, i]
        weight = weight[:, None, None] if axis == 0 else weight[None, :, None]
        return i + 1, total + taken * weight

    start = tf.fill(shape, tf.constant(1 << (PRECISION_BITS - 1), tf.int64))
    _, total = tf.while_loop(lambda i, _: i < ksize, add, (tf.constant(0), start))
    return tf.cast(tf.clip_by_value(tf.bitwise.right_shift(total, PRECISION_BITS), 0, 255), tf.uint8)


def resize_like_pillow(image: Any, size: int) -> Any:
    """Pillow's BILINEAR resize of a uint8 [H, W, 3] image to [size, size, 3]; a pass is skipped
    when its dimension already has the target size."""
    import tensorflow as tf

    def columns(image: Any) -> Any:
        return tf.cond(tf.shape(image)[1] != size, lambda: _resample_axis(tf, image, 1, size), lambda: image)

    def rows(image: Any) -> Any:
        return tf.cond(tf.shape(image)[0] != size, lambda: _resample_axis(tf, image, 0, size), lambda: image)

    # Pillow 13 (Resample.c, ImagingResampleInner): the rows' pass first when the height shrinks by more
    # than twice what the width does; the columns' first otherwise. Each pass rounds to uint8, so the
    # order shows in the pixels.
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    rows_first = (height - size > 0) & (height - size > (width - size) * 2)
    image = tf.cond(rows_first, lambda: columns(rows(image)), lambda: rows(columns(image)))
    return tf.ensure_shape(image, [size, size, 3])


def _composite(tf: Any, rgba: Any) -> Any:
    """AlphaComposite.c of `rgba` (uint8 [H, W, 4]) over opaque BACKGROUND, as RGB."""
    src = tf.cast(rgba, tf.int64)
    alpha = src[..., 3:4]
    dst = tf.constant(BACKGROUND, tf.int64)
    outa255 = alpha * 255  # dst alpha 255: blend = 255 * (255 - a)
    outa255 = outa255 + 255 * (255 - alpha)
    coef1 = alpha * 255 * 255 * (1 << 7) // outa255
    coef2 = 255 * (1 << 7) - coef1
    tmp = src[..., :3] * coef1 + dst * coef2 + (0x80 << 7)
    shift = tf.bitwise.right_shift
    out = shift(shift(shift(tmp, 8) + tmp, 8), 7)
    out = tf.where(alpha == 0, dst, out)
    return tf.cast(out, tf.uint8)


_MAX_IFD_ENTRIES = 64  # IFD0 entries searched for the orientation (cameras write 10-20)


def exif_orientation(data: Any) -> Any:
    """A JPEG's EXIF orientation (1-8) from its bytes, 1 when there is none: graph ops only."""
    import tensorflow as tf

    parts = tf.strings.split(tf.reshape(data, [1]), sep="Exif\x00\x00", maxsplit=1)
    found = tf.size(parts.flat_values) == 2
    tiff = tf.cond(found, lambda: parts.flat_values[-1], lambda: tf.constant(b"II*\x00\x08\x00\x00\x00\x00\x00"))
    length = 8 + 2 + 12 * _MAX_IFD_ENTRIES + 4096  # the header, IFD0 (at most 4 KB in) and its entries
    head = tf.io.decode_raw(tf.strings.substr(tiff, 0, length), tf.uint8)
    head = tf.cast(tf.pad(head, [[0, length - tf.shape(head)[0]]]), tf.int64)
    big_endian = tf.strings.substr(tiff, 0, 2) == b"MM"

    def u16(at: Any) -> Any:
        lo, hi = tf.gather(head, at), tf.gather(head, at + 1)
        return tf.where(big_endian, lo * 256 + hi, hi * 256 + lo)

    def u32(at: Any) -> Any:
        return tf.where(big_endian, u16(at) * 65536 + u16(at + 2), u16(at + 2) * 65536 + u16(at))

    ifd = u32(tf.constant(4, tf.int64))
    ifd = tf.where((ifd >= 8) & (ifd <= 4096), ifd, tf.constant(length - 2, tf.int64))  # none: no entries
    count = tf.minimum(u16(ifd), _MAX_IFD_ENTRIES)
    entries = ifd + 2 + 12 * tf.range(_MAX_IFD_ENTRIES, dtype=tf.int64)
    entries = tf.minimum(entries, length - 12)
    tags = u16(entries)
    values = u16(entries + 8)  # SHORT, left-justified in the value field
    hit = (tags == 0x0112) & (tf.range(_MAX_IFD_ENTRIES, dtype=tf.int64) < count) & (values >= 1) & (values <= 8)
    orientation = tf.reduce_max(tf.where(hit, values, tf.zeros_like(values)))
    return tf.where(found & (orientation > 0), orientation, tf.constant(1, tf.int64))


def exif_transpose(image: Any, orientation: Any) -> Any:
    """`ImageOps.exif_transpose` of a [H, W, C] image for an orientation 1-8."""
    import tensorflow as tf

    transposed = lambda: tf.transpose(image, [1, 0, 2])  # noqa: E731
    return tf.switch_case(
        tf.cast(orientation, tf.int32) - 1,
        [
            lambda: image,
            lambda: tf.reverse(image, [1]),  # FLIP_LEFT_RIGHT
            lambda: tf.reverse(image, [0, 1]),  # ROTATE_180
            lambda: tf.reverse(image, [0]),  # FLIP_TOP_BOTTOM
            transposed,  # TRANSPOSE
            lambda: tf.image.rot90(image, 3),  # ROTATE_270 (clockwise)
            lambda: tf.reverse(tf.transpose(image, [1, 0, 2]), [0, 1]),  # TRANSVERSE
            lambda: tf.image.rot90(image, 1),  # ROTATE_90 (counter-clockwise)
        ],
    )


def decode_like_etl(data: Any, size: int) -> Any:
    """The uint8 [size, size, 3] pixels `np.asarray(sources.load_image(data, size))` gives for one
    encoded image (a scalar tf.string: JPEG, PNG, BMP or GIF), computed with graph ops only."""
    import tensorflow as tf

    def jpeg() -> Any:
        shape = tf.io.extract_jpeg_shape(data)
        scale = tf.minimum(shape[1] // size, shape[0] // size)
        image = tf.case(
            [
                (
                    scale >= ratio,
                    lambda r=ratio: tf.io.decode_jpeg(data, channels=3, ratio=r, dct_method="INTEGER_ACCURATE"),
                )
                for ratio in (8, 4, 2)
            ],
            default=lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        )
        return exif_transpose(image, exif_orientation(data))

    def png() -> Any:
        wide = tf.io.decode_png(data, channels=0, dtype=tf.uint16)
        channels = tf.shape(wide)[-1]
        gray8 = tf.cast((tf.cast(wide, tf.int64) * 255 + 32767) // 65535, tf.uint8)  # 8-bit gray: exact
        high = tf.cast(tf.bitwise.right_shift(wide, 8), tf.uint8)  # Pillow reads 16-bit RGB(A)/LA as their high byte
        return tf.switch_case(
            channels - 1,
            [
                lambda: tf.image.grayscale_to_rgb(gray8),
                lambda: _composite(tf, tf.concat([tf.repeat(high[..., :1], 3, axis=-1), high[..., 1:]], -1)),
                lambda: high,
                lambda: _composite(tf, high),
            ],
        )

    def other() -> Any:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        return image

    is_jpeg = tf.strings.substr(data, 0, 2) == b"\xff\xd8"
    is_png = tf.strings.substr(data, 0, 4) == b"\x89PNG"
    image = tf.case([(is_jpeg, jpeg), (is_png, png)], default=other)
    image = tf.ensure_shape(image, [None, None, 3])
    return resize_like_pillow(image, size)
