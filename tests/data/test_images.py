"""Image datasets from files: tfds (mocked), CelebA's own files, folders, the cache."""

import dataclasses
import io
import logging
import os
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from wgan_jax import data as data_lib, parallel
from wgan_jax.data import images as images_lib
from wgan_jax.errors import UserError


def _config(tiny_config, dataset, tmp_path, **overrides):
  return tiny_config(dataset, data_dir=str(tmp_path / 'tfds'), **overrides)


@pytest.fixture
def prepared_by_mock(monkeypatch):
  """tfds' mock replaces download_and_prepare, so TensorFlow is not needed."""
  monkeypatch.setattr(images_lib, 'have_tensorflow', lambda: True)


@pytest.mark.parametrize('name, channels', [
    ('celeb_a', 3), ('cifar10', 3), ('mnist', 1), ('fashion_mnist', 1), ('lsun/bedroom', 3)])
def test_tfds_datasets_through_mock_data(tmp_path, prepared_by_mock, name, channels, tiny_config):
  config = _config(tiny_config, name, tmp_path)
  with tfds.testing.mock_data(num_examples=6):
    data = data_lib.get_dataset(config)
    builder = tfds.builder(name)
    first = builder.as_data_source(split=config.split)[0]['image']
  assert data.examples.shape == (6, 16, 16, channels)
  assert data.examples.dtype == np.uint8
  assert data.examples.std() > 5  # random pixels, not a constant
  # Example 0 is the mock's example 0, centre-cropped and resized.
  spec = images_lib.Spec(16, channels, config.crop)
  np.testing.assert_array_equal(data.examples[0], images_lib.to_pixels(first, spec))
  # Grey and colour on request.
  other = 3 if channels == 1 else 1
  config.channels = other
  with tfds.testing.mock_data(num_examples=6):
    converted = data_lib.get_dataset(config).examples
  assert converted.shape == (6, 16, 16, other)
  if other == 3:
    np.testing.assert_array_equal(converted[..., 0], converted[..., 2])
    np.testing.assert_array_equal(converted[..., 0], data.examples[..., 0])


def test_celeba_preset_and_the_float_range():
  from wgan_jax import configs, pixels as pixels_lib
  config = configs.get_config('celeb_a')
  assert (config.image_size, config.batch_size, config.ngf, config.ndf, config.crop,
          config.split) == (64, 64, 64, 64, 108, 'all')
  pixels = np.array([[0, 128, 255]], np.uint8)
  floats = np.asarray(pixels_lib.to_float(pixels))
  np.testing.assert_allclose(floats, [[-1.0, 128 / 127.5 - 1, 1.0]], atol=1e-6)


# CelebA from its five files.

CELEBA_H, CELEBA_W = 218, 178
QUADRANTS = {(0, 0): (0, 0, 0), (0, 1): (255, 255, 255), (1, 0): (0, 200, 0),
             (1, 1): (0, 0, 220)}
BORDER = (230, 40, 40)  # everything outside the central 108x108 square


def _celeba_face():
  """A 218x178 picture: four coloured quadrants in the centre 108x108, red around."""
  image = np.empty((CELEBA_H, CELEBA_W, 3), np.uint8)
  image[:] = BORDER
  top, left = (CELEBA_H - 108) // 2, (CELEBA_W - 108) // 2  # 55, 35
  for (r, c), colour in QUADRANTS.items():
    image[top + 54 * r:top + 54 * (r + 1), left + 54 * c:left + 54 * (c + 1)] = colour
  return image


def _write_celeba_files(data_dir, partitions=(0, 0, 0, 0, 1, 2)):
  manual = data_dir / 'downloads' / 'manual'
  manual.mkdir(parents=True)
  names = [f'{i:06d}.jpg' for i in range(1, len(partitions) + 1)]
  face = _celeba_face()
  with zipfile.ZipFile(manual / 'img_align_celeba.zip', 'w') as z:
    for i, name in enumerate(names):
      buf = io.BytesIO()
      # Image i is the face with its colours dimmed by i * 4.
      Image.fromarray((face - np.minimum(face, i * 4)).astype(np.uint8)).save(
          buf, 'JPEG', quality=95)
      z.writestr(f'img_align_celeba/{name}', buf.getvalue())
  (manual / 'list_eval_partition.txt').write_text(
      ''.join(f'{n} {p}\n' for n, p in zip(names, partitions)))
  # The annotations, in CelebA's layout (tfds' builder parses them).
  from tensorflow_datasets.datasets.celeb_a import celeb_a_dataset_builder as celeb_a
  for file, headings, value in (('list_attr_celeba.txt', celeb_a.ATTR_HEADINGS, '1'),
                                ('list_landmarks_align_celeba.txt',
                                 celeb_a.LANDMARK_HEADINGS, '50')):
    (manual / file).write_text(f'{len(names)}\n{" ".join(headings)}\n' + ''.join(
        f'{n} {" ".join([value] * len(headings))}\n' for n in names))
  (manual / 'identity_CelebA.txt').write_text(''.join(f'{n} 7\n' for n in names))
  return names


def test_celeba_from_its_files_is_cropped_to_108_and_resized(tmp_path, tiny_config):
  _write_celeba_files(tmp_path / 'tfds')
  config = _config(tiny_config, 'celeb_a', tmp_path)
  assert config.crop == 108
  data = data_lib.get_dataset(config)
  assert data.examples.shape == (6, 16, 16, 3) and data.examples.dtype == np.uint8
  face = data.examples[0].astype(int)
  for (r, c), colour in QUADRANTS.items():
    # Away from the edges between quadrants (JPEG and bilinear blur them).
    inner = face[8 * r + 1:8 * r + 7, 8 * c + 1:8 * c + 7]
    assert np.abs(inner - colour).max() <= 12, ((r, c), inner.mean(axis=(0, 1)))
  # No red border anywhere: the crop is the central 108x108, nothing else.
  red = (face[..., 0] > 150) & (face[..., 1] < 100) & (face[..., 2] < 100)
  assert not red.any()
  # Images in order of their names: image i is dimmed by i * 4.
  assert (data.examples[5].astype(int) - face)[1:7, 9:15].mean() == pytest.approx(-20,
                                                                                   abs=3)
  # Without the crop the largest centred square (178x178) shows the border.
  wide = data_lib.get_dataset(_config(tiny_config, 'celeb_a', tmp_path, crop=0)).examples[0]
  assert np.abs(wide[0, 8].astype(int) - BORDER).max() <= 12


def test_celeba_splits_follow_the_partition_file(tmp_path, tiny_config):
  _write_celeba_files(tmp_path / 'tfds')
  sizes = {split: len(data_lib.get_dataset(
      _config(tiny_config, 'celeb_a', tmp_path, split=split)).examples)
           for split in ('all', 'train', 'validation+test', 'test')}
  assert sizes == {'all': 6, 'train': 4, 'validation+test': 2, 'test': 1}
  with pytest.raises(UserError, match='--split=train'):
    data_lib.get_dataset(_config(tiny_config, 'celeb_a', tmp_path, split='train[:50%]'))


def test_celeba_without_files_or_tensorflow_says_what_to_do(tmp_path, monkeypatch, tiny_config):
  monkeypatch.setattr(images_lib, 'have_tensorflow', lambda: False)
  with pytest.raises(UserError) as info:
    data_lib.get_dataset(_config(tiny_config, 'celeb_a', tmp_path))
  message = str(info.value)
  assert '\n' not in message
  for name in images_lib.CELEBA_FILES:
    assert name in message
  assert str(tmp_path / 'tfds' / 'downloads' / 'manual') in message
  assert 'pip install tensorflow' in message and '--dataset=folder:' in message


def test_celeba_failed_download_says_which_files_to_put_where(tmp_path, monkeypatch, tiny_config):
  from tensorflow_datasets.core.download import download_manager

  def refused(self, **kwargs):
    del self, kwargs
    raise download_manager.NonMatchingChecksumError(
        'Artifact https://drive.google.com/uc?export=download, downloaded to x, has '
        'wrong checksum:\n* Expected: ...')

  monkeypatch.setattr(images_lib, 'have_tensorflow', lambda: True)
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', refused)
  with pytest.raises(UserError) as info:
    data_lib.get_dataset(_config(tiny_config, 'celeb_a', tmp_path))
  message = str(info.value)
  assert '\n' not in message and 'could not download celeb_a' in message
  assert 'NonMatchingChecksumError' in message
  assert all(name in message for name in images_lib.CELEBA_FILES)
  assert str(tmp_path / 'tfds' / 'downloads' / 'manual') in message


def test_real_celeba_builder_on_fake_files(tmp_path, monkeypatch, tiny_config):
  """tfds' own CelebA builder prepares the fake files, and the pipeline reads
  what it wrote (array_record, no mock) as it reads the files directly.

  Needs TensorFlow: tfds opens the archive through tf.io.gfile
  (core/download/extractor.py), so without it this is skipped. tfds checks
  the files against the real ones' checksums, so the fakes' are registered.
  """
  pytest.importorskip('tensorflow')
  from tensorflow_datasets.core.download import checksums
  data_dir = tmp_path / 'tfds'
  _write_celeba_files(data_dir)
  direct = data_lib.get_dataset(_config(tiny_config, 'celeb_a', tmp_path)).examples
  manual = data_dir / 'downloads' / 'manual'
  builder_cls = tfds.builder_cls('celeb_a')
  fakes = {url: dataclasses.replace(checksums.compute_url_info(manual / info.filename),
                                   filename=info.filename)
           for url, info in builder_cls.url_infos.items()}
  monkeypatch.setattr(builder_cls, 'url_infos', fakes)
  builder = tfds.builder('celeb_a', data_dir=str(data_dir))
  builder.download_and_prepare(
      file_format='array_record',
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  assert builder.info.splits['train'].num_examples == 4
  via_tfds = data_lib.get_dataset(_config(tiny_config, 'celeb_a', tmp_path)).examples
  assert not np.shares_memory(direct, via_tfds)
  # tfds stores the examples in its own order: compare them as a set.
  order = lambda x: x[np.argsort(x.reshape(len(x), -1).mean(1))]  # pylint: disable=unnecessary-lambda-assignment
  np.testing.assert_array_equal(order(np.asarray(via_tfds)), order(np.asarray(direct)))


@pytest.mark.parametrize('name, expected', [
    ('celeb', "unknown dataset 'celeb'. Did you mean celeb_a"),
    ('cifar', "Did you mean cifar10, cifar100"),
    ('lsun/bedrom', 'lsun has no such config; try lsun/bedroom'),
])
def test_unknown_tfds_names_get_close_names(tmp_path, name, expected, tiny_config):
  with pytest.raises(UserError) as info:
    data_lib.get_dataset(_config(tiny_config, name, tmp_path))
  assert expected in str(info.value) and '\n' not in str(info.value)


# Folders.

def _save(path, array, **kwargs):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path, **kwargs)


def _make_folder(root):
  """Nested images of several kinds, a corrupt one and a text file."""
  rng = np.random.default_rng(0)
  for i in range(5):
    _save(root / 'a' / f'rgb{i}.png', rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
  # 40 wide, 20 high: red | white (the centred 20x20 square) | blue.
  wide = np.full((20, 40, 3), 255, np.uint8)
  wide[:, :10] = (255, 0, 0)
  wide[:, 30:] = (0, 0, 255)
  _save(root / 'a' / 'b' / 'wide.png', wide)
  _save(root / 'a' / 'b' / 'grey.jpg', np.full((16, 16), 90, np.uint8), quality=100)
  rgba = np.zeros((16, 16, 4), np.uint8)
  rgba[..., :3] = (10, 120, 250)
  _save(root / 'c' / 'rgba.png', rgba)  # transparent: its colour is kept, as PIL does
  _save(root / 'c' / 'deep.png', np.full((16, 16), 65535, np.uint16))  # 16-bit grey
  (root / 'c' / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
  (root / 'notes.txt').write_text('not an image')
  return 9  # images that can be read


def test_folder_of_mixed_images(tmp_path, caplog, monkeypatch, tiny_config):
  root = tmp_path / 'images'
  readable = _make_folder(root)
  monkeypatch.setattr(images_lib, 'CHUNK', 2)  # many chunks, in and out of the window
  config = tiny_config(f'folder:{root}')
  with caplog.at_level(logging.WARNING):
    data = data_lib.get_dataset(config)
  assert data.examples.shape == (readable, 16, 16, 3)
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1 and 'Skipped 2 of 11 files' in warnings[0], warnings
  # Sorted by path, folders first: a/b/grey, a/b/wide, a/rgb0..4, c/deep, c/rgba.
  grey, wide, deep, rgba = (data.examples[i].astype(int) for i in (0, 1, 7, 8))
  assert np.abs(grey - 90).max() <= 2
  assert np.abs(wide[:, 2:14] - 255).max() <= 1  # the white centre square alone
  assert deep.min() == 255
  assert np.abs(rgba - (10, 120, 250)).max() <= 1
  grey_config = tiny_config(f'folder:{root}', channels=1)
  grey_data = data_lib.get_dataset(grey_config).examples
  assert grey_data.shape == (readable, 16, 16, 1)
  assert abs(int(grey_data[8].mean()) - round(0.299 * 10 + 0.587 * 120 + 0.114 * 250)) <= 1


def test_folder_errors_name_the_path(tmp_path, tiny_config):
  missing = tmp_path / 'nowhere'
  with pytest.raises(UserError, match=f'--dataset=folder:{missing}: no such directory'):
    data_lib.get_dataset(tiny_config(f'folder:{missing}'))
  (tmp_path / 'empty' / 'sub').mkdir(parents=True)
  with pytest.raises(UserError, match='empty'):
    data_lib.get_dataset(tiny_config(f'folder:{tmp_path / "empty"}'))
  (tmp_path / 'text').mkdir()
  (tmp_path / 'text' / 'a.jpg').write_text('no')
  with pytest.raises(UserError, match=f'none of the 1 files of {tmp_path / "text"}'):
    data_lib.get_dataset(tiny_config(f'folder:{tmp_path / "text"}'))


# The cache.

def test_second_run_reads_the_cache_and_gives_the_same_batches(tmp_path, monkeypatch,
                                                               devices, tiny_config):
  root = tmp_path / 'images'
  _make_folder(root)
  config = tiny_config(f'folder:{root}', batch_size=4)

  def batches():
    data = data_lib.get_dataset(config)
    source = parallel.HostSource(data, config.batch_size, config.seed, devices)
    out = np.asarray(source.batches(0, 5)[1])
    source.close()
    return data, out

  first, first_batches = batches()
  cache = [f for f in os.listdir(root / '.wgan_jax_cache') if f.endswith('.npy')]
  assert len(cache) == 1

  def no_decoding(path):
    raise AssertionError(f'decoded {path} again')

  monkeypatch.setattr(images_lib, 'decode_file', no_decoding)
  second, second_batches = batches()
  assert isinstance(second.examples, np.memmap)
  np.testing.assert_array_equal(first.examples, second.examples)
  np.testing.assert_array_equal(first_batches, second_batches)
  # Another size is another cache entry; a changed folder replaces its entry.
  monkeypatch.undo()
  data_lib.get_dataset(tiny_config(f'folder:{root}', image_size=32))
  _save(root / 'a' / 'new.png', np.zeros((8, 8, 3), np.uint8))
  assert len(data_lib.get_dataset(config).examples) == len(first.examples) + 1
  entries = sorted(os.listdir(root / '.wgan_jax_cache'))
  assert len(entries) == 4 and cache[0] not in entries, entries


def test_unwritable_cache_keeps_the_images_in_memory(tmp_path, caplog, tiny_config):
  root = tmp_path / 'images'
  readable = _make_folder(root)
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  config = tiny_config(f'folder:{root}', cache_dir=str(blocker / 'cache'))
  with caplog.at_level(logging.WARNING):
    data = data_lib.get_dataset(config)
  assert len(data.examples) == readable and not isinstance(data.examples, np.memmap)
  assert any('Cannot write the image cache' in r.getMessage() for r in caplog.records)
  assert not (root / '.wgan_jax_cache').exists()
