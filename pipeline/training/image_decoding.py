"""Image bytes decoded in the graph as the ETL decodes them (imports TensorFlow).

A first version, to be replaced by one reproducing Pillow bit for bit (the ETL's
`etl/sources.py` `load_image`: draft, EXIF transpose, RGB, BILINEAR resize). This
one decodes with TensorFlow and resizes bilinearly with antialiasing: exact for
an image already at the training size (no resize happens), close otherwise.
"""

from __future__ import annotations

import tensorflow as tf


def decode_like_etl(data: tf.Tensor, size: int) -> tf.Tensor:
    """Encoded image bytes (a scalar string: JPEG, PNG, BMP or GIF, its first frame) as uint8 [size, size, 3]."""
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    shape = tf.shape(image)

    def resized() -> tf.Tensor:
        out = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

    same = tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))
    out = tf.cond(same, lambda: image, resized)
    return tf.ensure_shape(out, [size, size, 3])
