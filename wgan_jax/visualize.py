"""Pictures of a run: sample grids, scatter plots of 2-D samples, loss curves."""

from __future__ import annotations

import math

import numpy as np

from wgan_jax import files
from wgan_jax import pixels as pixels_lib


def image_grid(images: np.ndarray, ncol: int = 8, padding: int = 2) -> np.ndarray:
  """(N, H, W, C) in [-1, 1] (or uint8 pixels) -> one uint8 (rows, cols, C)
  picture, like torchvision's make_grid."""
  n, h, w, c = images.shape
  ncol = min(ncol, n)
  nrow = math.ceil(n / ncol)
  grid = np.zeros((padding + nrow * (h + padding), padding + ncol * (w + padding), c),
                  np.uint8)
  if images.dtype == np.uint8:
    pixels = np.asarray(images)
  else:
    pixels = pixels_lib.to_uint8(images)
  for i in range(n):
    r, q = divmod(i, ncol)
    y, x = padding + r * (h + padding), padding + q * (w + padding)
    grid[y:y + h, x:x + w] = pixels[i]
  return grid


def save_image_grid(path: str, images: np.ndarray, ncol: int = 8,
                    min_width: int = 320) -> None:
  """A PNG grid; small images are enlarged (nearest neighbour) to be seen."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  grid = image_grid(images, ncol)
  if grid.shape[-1] not in (1, 3):  # show the first channel of other counts
    grid = grid[..., :1]
  scale = max(1, -(-min_width // grid.shape[1]))
  if scale > 1:
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
  picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
  files.write_atomic(path, lambda f: picture.save(f, 'PNG'))


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save_scatter(path: str, fake: np.ndarray, real: np.ndarray | None = None,
                 title: str = '') -> None:
  """Generated 2-D points (and real ones, behind them) as a scatter plot."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
  if real is not None:
    ax.scatter(real[:, 0], real[:, 1], s=3, c='tab:orange', alpha=0.5, label='real')
  ax.scatter(fake[:, 0], fake[:, 1], s=3, c='tab:blue', alpha=0.6, label='generated')
  ax.set_aspect('equal')
  ax.legend(loc='upper right', markerscale=4)
  ax.set_title(title)
  fig.tight_layout()
  files.write_atomic(path, lambda f: fig.savefig(f, format='png'))
  plt.close(fig)


def median_filter(values: np.ndarray, window: int) -> np.ndarray:
  """Running median over a centred window (the paper's plots use one).

  Within half a window of either end the window shrinks to the values there
  are. Padding with copies of the end value would let that one value set the
  median there: a WGAN's last estimate, from 100 critic steps when the run
  ends on a multiple of 500, stands well above its neighbours.
  """
  values = np.asarray(values, np.float64)
  n = len(values)
  if window <= 1 or n == 0:
    return values
  half = window // 2
  out = np.empty(n)
  if n > 2 * half:
    windows = np.lib.stride_tricks.sliding_window_view(values, 2 * half + 1)
    out[half:n - half] = np.median(windows, axis=1)
  for i in [*range(min(half, n)), *range(max(half, n - half), n)]:
    out[i] = np.median(values[max(0, i - half):i + half + 1])
  return out


def save_curve(path: str, steps: np.ndarray, values: np.ndarray, *,
               ylabel: str, title: str = '', window: int = 0) -> None:
  """A metric over generator iterations, raw and median-filtered."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
  ax.plot(steps, values, color='tab:blue', alpha=0.3, lw=0.8, label='per iteration')
  window = window or max(1, len(values) // 50)
  if window > 1:
    ax.plot(steps, median_filter(values, window), color='tab:blue', lw=1.8,
            label=f'median of {2 * (window // 2) + 1}')
  ax.set_xlabel('generator iterations')
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  files.write_atomic(path, lambda f: fig.savefig(f, format='png'))
  plt.close(fig)

