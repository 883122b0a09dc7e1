"""Pictures: grid layout, median filter, files written whole."""

import numpy as np
from PIL import Image

from wgan_jax import visualize


def test_image_grid_places_each_image_and_maps_range():
  images = np.full((3, 2, 2, 1), -1.0, np.float32)
  images[1] = 1.0
  grid = visualize.image_grid(images, ncol=2, padding=1)
  assert grid.shape == (1 + 2 * 3, 1 + 2 * 3, 1)
  assert grid[1:3, 1:3].max() == 0  # image 0: -1 -> black
  assert grid[1:3, 4:6].min() == 255  # image 1: +1 -> white
  assert grid[4:6, 1:3].max() == 0  # image 2, second row
  assert grid[0].max() == 0  # padding


def test_save_image_grid_rgb_and_enlarges_small_grids(tmp_path):
  images = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 3))
  path = tmp_path / 'g.png'
  visualize.save_image_grid(str(path), images, ncol=4, min_width=100)
  with Image.open(path) as im:
    assert im.mode == 'RGB'
    width = 2 + 4 * 10
    assert im.size == (3 * width, 3 * 12)
  assert not (tmp_path / 'g.png.tmp').exists()


def test_median_filter_removes_spikes_and_keeps_length():
  values = np.ones(50)
  values[20] = 100.0
  filtered = visualize.median_filter(values, 5)
  assert filtered.shape == values.shape
  np.testing.assert_array_equal(filtered, np.ones(50))
  np.testing.assert_array_equal(visualize.median_filter(values, 1), values)
  # An outlier at either end is one value among the window's, not half of it.
  values[0] = values[-1] = 100.0
  np.testing.assert_array_equal(visualize.median_filter(values, 5), np.ones(50))
  np.testing.assert_array_equal(visualize.median_filter(np.arange(5.0), 3), [0.5, 1, 2, 3, 3.5])
  np.testing.assert_array_equal(visualize.median_filter(np.arange(3.0), 9), [1, 1, 1])


def test_curve_and_scatter_are_pngs(tmp_path):
  steps = np.arange(1, 101)
  visualize.save_curve(str(tmp_path / 'c.png'), steps, np.exp(-steps / 30.0),
                       ylabel='W')
  pts = np.random.default_rng(1).normal(size=(200, 2))
  visualize.save_scatter(str(tmp_path / 's.png'), pts, pts + 1)
  for name in ('c.png', 's.png'):
    with Image.open(tmp_path / name) as im:
      assert im.format == 'PNG' and im.size[0] >= 400
