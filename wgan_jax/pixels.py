"""The one conversion between uint8 pixels and images in [-1, 1]:
level v in 0..255 is the value v / 127.5 - 1 (so 0 -> -1 and 255 -> 1)."""

from __future__ import annotations

import numpy as np


def to_float(x):
  """uint8 pixels -> float32 in [-1, 1]; float data passes through.

  Works on NumPy and JAX arrays alike (traced ones too)."""
  if x.dtype == np.uint8:
    return x.astype(np.float32) / 127.5 - 1.0
  return x


def levels(images, xp=np):
  """Images in [-1, 1] -> the nearest of the 256 levels (floats 0..255),
  halves rounded up; ``xp`` is ``numpy`` or ``jax.numpy``."""
  return xp.clip(xp.floor((images + 1.0) * 127.5 + 0.5), 0.0, 255.0)


def to_uint8(images, round_half_even: bool = False) -> np.ndarray:
  """Images in [-1, 1] -> uint8 pixels (halves rounded up, or to even)."""
  images = np.asarray(images, np.float32)
  if round_half_even:
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
  return levels(images).astype(np.uint8)
