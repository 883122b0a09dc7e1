"""Image datasets from files: tensorflow-datasets, folders of images, CelebA.

Every image is decoded, centre-cropped and resized once, into uint8 pixels
(N, S, S, C), and the result is cached in a ``.npy`` file beside the data
(``<data_dir>/wgan_jax_cache/`` for tensorflow-datasets, ``PATH/.wgan_jax_cache/``
for folders; ``--cache_dir`` puts it elsewhere) with a ``.json`` note of what
it holds. Later runs memory-map the cache and decode nothing. Where the cache
cannot be written, the pixels stay in memory for the run.

Preprocessing, as the field does it: the largest centred square (or a centred
``crop`` x ``crop`` square: 108 for CelebA, the DCGAN convention) is resized
to the image size (bilinear, antialiased when shrinking, as PIL and
torchvision do), then converted to grey (``channels=1``) or RGB (3) as PIL's
``convert`` does, which is what the reference's image loader uses.

tensorflow-datasets reads prepared datasets (array_record) without
TensorFlow, but preparing one needs TensorFlow (tfds encodes images and opens
archives through it). CelebA is also read straight from its own files in
``<data_dir>/downloads/manual``, without TensorFlow.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import difflib
import hashlib
import importlib.util
import itertools
import os
import threading
import zipfile
from collections.abc import Callable

import numpy as np
from absl import logging

from wgan_jax.data import cache
from wgan_jax.data.cache import CACHE_DIRNAME
from wgan_jax.errors import UserError

# Bump when the pixels a cache holds would change, to invalidate old caches.
PREPROCESS_VERSION = 1
# What a broken or non-image file makes PIL raise.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, zipfile.BadZipFile)

CELEBA_FILES = ('img_align_celeba.zip', 'list_eval_partition.txt', 'list_attr_celeba.txt',
                'list_landmarks_align_celeba.txt', 'identity_CelebA.txt')
CELEBA_SPLITS = {'train': 0, 'validation': 1, 'test': 2}


@dataclasses.dataclass(frozen=True)
class Spec:
  """What the pixels should look like."""
  size: int
  channels: int  # 1 or 3
  crop: int = 0  # side of the centred square cut before resizing; 0 = largest


# Preprocessing.

def _as_pil(image):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if isinstance(image, Image.Image):
    return image
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  return Image.fromarray(image)


def to_pixels(image, spec: Spec) -> np.ndarray:
  """A PIL image or (H, W[, C]) array -> (size, size, channels) uint8."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = _as_pil(image)
  if image.mode in ('I', 'F') or image.mode.startswith('I;16'):
    # 16- and 32-bit grey: convert('L') would clip, so scale to 8 bits.
    values = np.asarray(image, np.float64)
    top = 65535.0 if image.mode.startswith('I;16') else max(values.max(), 255.0)
    image = Image.fromarray(np.clip(values * (255.0 / top) + 0.5, 0, 255).astype(np.uint8))
  image = image.convert('L' if spec.channels == 1 else 'RGB')
  width, height = image.size
  side = min(width, height, spec.crop) if spec.crop else min(width, height)
  left, top = (width - side) // 2, (height - side) // 2
  box = (left, top, left + side, top + side)
  if side == spec.size:
    image = image.crop(box)
  else:
    image = image.resize((spec.size, spec.size), Image.BILINEAR, box=box)
  return np.asarray(image, np.uint8).reshape(spec.size, spec.size, spec.channels)


def decode_file(path: str):
  """The image in ``path``, decoded (raises one of DECODE_ERRORS if it is not one)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as image:
    image.load()
  return image


# Decoding many images, in threads (PIL releases the GIL while it decodes and
# resizes), into a preallocated array.

CHUNK = 64


def _fill(out: np.ndarray, count: int, load: Callable[[int], object], spec: Spec,
          desc: str) -> tuple[int, list[int]]:
  """out[:k] = pixels of load(i) for i < count, skipping those that fail.

  Returns k and the indices that failed. Order is kept.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  def work(start):
    pixels, failed = [], []
    for i in range(start, min(start + CHUNK, count)):
      try:
        image = load(i)
      except DECODE_ERRORS:
        failed.append(i)
        continue
      pixels.append(to_pixels(image, spec))
    return pixels, failed

  workers = max(1, os.cpu_count() or 1)
  starts = iter(range(0, count, CHUNK))
  written, failures = 0, []
  with concurrent.futures.ThreadPoolExecutor(workers) as pool, tqdm(
      total=count, desc=desc, unit='img', mininterval=2.0, leave=False) as bar:
    # A bounded window of chunks in flight keeps memory at a few chunks.
    window = [pool.submit(work, s) for s in itertools.islice(starts, 2 * workers)]
    while window:
      pixels, failed = window.pop(0).result()
      nxt = next(starts, None)
      if nxt is not None:
        window.append(pool.submit(work, nxt))
      if pixels:
        out[written:written + len(pixels)] = np.stack(pixels)
        written += len(pixels)
      failures += failed
      bar.update(len(pixels) + len(failed))
  return written, failures


def cached_pixels(path: str | None, key: dict, count: int,
                  load: Callable[[int], object], spec: Spec, what: str,
                  name_of: Callable[[int], str] = str) -> np.ndarray:
  """The pixels of ``count`` images, from the cache at ``path`` or decoded into it.

  ``load(i)`` gives image i (anything ``to_pixels`` takes). Images that fail to
  decode are skipped with one warning that counts them; ``what`` names the
  images in messages, ``name_of(i)`` image i.
  """
  return cache.cached_pixels(
      path, key, (count, spec.size, spec.size, spec.channels),
      lambda out: _fill(out, count, load, spec, desc=f'decoding {what}'), what, name_of)


def _label(name: str, spec: Spec) -> str:
  crop = f'-crop{spec.crop}' if spec.crop else ''
  return f'{name}-{spec.size}px-{spec.channels}c{crop}'


# Folders.

def list_files(root: str) -> list[str]:
  """Every file under ``root``, recursively, sorted; hidden files and folders
  (such as the cache) are left out. PIL tells images from the rest by their
  content, whatever their names."""
  paths = []
  for folder, dirs, files in os.walk(root, followlinks=True):
    dirs[:] = [d for d in dirs if not d.startswith('.')]
    paths += [os.path.join(folder, f) for f in files if not f.startswith('.')]
  return sorted(paths)


def folder_pixels(root: str, spec: Spec, cache_dir: str = '') -> np.ndarray:
  """Every image under ``root`` (``--dataset=folder:root``) as uint8 pixels."""
  root = os.path.expanduser(root)
  if not root:
    raise UserError('--dataset=folder: needs a path: --dataset=folder:PATH.')
  if not os.path.isdir(root):
    raise UserError(f'--dataset=folder:{root}: no such directory; pass a folder of '
                    'images.')
  spec = dataclasses.replace(spec, channels=spec.channels or 3)  # as the reference
  files = list_files(root)
  if not files:
    raise UserError(f'--dataset=folder:{root}: the folder is empty; pass a folder of '
                    'images (jpg, png, webp, ..., in any subfolders).')
  stats = [os.stat(f) for f in files]
  key = dict(kind='folder', root=os.path.abspath(root), spec=dataclasses.asdict(spec),
             version=PREPROCESS_VERSION,
             files=hashlib.sha1('\n'.join(
                 f'{os.path.relpath(f, root)}\t{s.st_size}\t{s.st_mtime_ns}'
                 for f, s in zip(files, stats)).encode()).hexdigest())
  where = cache_dir or os.path.join(root, '.' + CACHE_DIRNAME)
  label = _label(os.path.basename(os.path.abspath(root)), spec)
  return cached_pixels(cache.cache_path(where, label, key), key, len(files),
                       lambda i: decode_file(files[i]), spec, what=root,
                       name_of=files.__getitem__)


# tensorflow-datasets.

def default_data_dir() -> str:
  return os.environ.get('TFDS_DATA_DIR') or os.path.expanduser('~/tensorflow_datasets')


def have_tensorflow() -> bool:
  return importlib.util.find_spec('tensorflow') is not None


def unknown_dataset(name: str, embedded) -> UserError:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  close = difflib.get_close_matches(name, list(embedded), n=3, cutoff=0.6)
  if not close:
    names = tfds.list_builders(with_community_datasets=False)
    close = difflib.get_close_matches(name.split('/')[0], names, n=3, cutoff=0.6)
  hint = f' Did you mean {", ".join(close)}?' if close else ''
  return UserError(f'unknown dataset {name!r}.{hint} Embedded datasets: '
                   f'{", ".join(embedded)}; or any tensorflow-datasets image dataset by '
                   'name (celeb_a, cifar10, mnist, ...), or folder:PATH.')


def _builder(name: str, data_dir: str, embedded):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core import registered  # pylint: disable=g-import-not-at-top
  try:
    return tfds.builder(name, data_dir=data_dir)
  except registered.DatasetNotFoundError:
    raise unknown_dataset(name, embedded) from None
  except ValueError as e:
    if 'BuilderConfig' not in str(e):
      raise
    base = name.split('/')[0]
    configs = [c.name for c in tfds.builder_cls(base).BUILDER_CONFIGS]
    close = difflib.get_close_matches(name.split('/', 1)[-1], configs, n=3, cutoff=0.5)
    shown = close or configs[:8]
    raise UserError(f'--dataset={name}: {base} has no such config; try '
                    f'{", ".join(f"{base}/{c}" for c in shown)}.') from None


def _image_key(builder) -> str:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  features = builder.info.features
  keys = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
  if not keys:
    raise UserError(f'--dataset={builder.name}: it has no image feature; pass an '
                    'image dataset.')
  return 'image' if 'image' in keys else keys[0]


def _manual_dir(data_dir: str) -> str:
  return os.path.join(data_dir, 'downloads', 'manual')


def celeba_instructions(data_dir: str) -> str:
  return (f'put the five CelebA files ({", ".join(CELEBA_FILES)}) from the CelebA '
          f'page in {_manual_dir(data_dir)}, or extract img_align_celeba.zip '
          'and pass --dataset=folder:PATH/img_align_celeba --crop=108')


def _prepare(builder, name: str, data_dir: str) -> None:
  """Downloads and prepares a tfds dataset, turning failures into UserErrors."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core.download import download_manager  # pylint: disable=g-import-not-at-top
  copy = os.path.join(data_dir, name.split('/')[0])
  if not have_tensorflow():
    if name == 'celeb_a':
      fix = f'{celeba_instructions(data_dir)} (both read without TensorFlow)'
    else:
      fix = f'prepare it where TensorFlow is installed and copy {copy} here'
    raise UserError(f'{name} is not prepared in {data_dir}, and tensorflow-datasets '
                    'needs TensorFlow to prepare it (reading needs none): pip install '
                    f'tensorflow, or {fix}.')
  if name == 'celeb_a':
    fix = celeba_instructions(data_dir)
  else:
    fix = f'check the network, or prepare it where there is one and copy {copy} here'
  logging.info('Downloading and preparing %s in %s (once).', name, data_dir)
  try:
    builder.download_and_prepare(
        file_format='array_record',
        download_config=tfds.download.DownloadConfig(
            manual_dir=_manual_dir(data_dir)))
  except (download_manager.NonMatchingChecksumError, tfds.download.DownloadError,
          OSError, AssertionError) as e:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    raise UserError(f'could not download {name} ({type(e).__name__}: {first}); '
                    f'{fix}.') from None


def _tfds_source(builder, split: str):
  try:
    return builder.as_data_source(split=split)
  except (KeyError, ValueError) as e:
    splits = list(builder.info.splits.keys())
    if 'split' in str(e).lower() and splits:
      raise UserError(f'--split={split}: {builder.name} has the splits '
                      f'{", ".join(splits)} (combine them with +, or all).') from None
    raise
  except NotImplementedError:
    raise UserError(f'{builder.name} in {builder.data_dir} is not in array_record '
                    'format, which tensorflow-datasets reads without TensorFlow; '
                    'delete that folder to prepare it again.') from None


def tfds_pixels(name: str, split: str, spec: Spec, data_dir: str = '',
                cache_dir: str = '', embedded=()) -> np.ndarray:
  """A tensorflow-datasets image dataset as uint8 pixels (``spec.channels`` 0
  keeps the dataset's own)."""
  data_dir = os.path.expanduser(data_dir or default_data_dir())
  builder = _builder(name, data_dir, embedded)
  key_name = _image_key(builder)
  own = builder.info.features[key_name].shape[-1] or 3
  spec = dataclasses.replace(spec, channels=spec.channels or (1 if own == 1 else 3))
  cache_dir = cache_dir or os.path.join(data_dir, CACHE_DIRNAME)
  if not builder.is_prepared():
    if name == 'celeb_a' and celeba_files_present(data_dir):
      return celeba_manual_pixels(data_dir, split, spec, cache_dir)
    _prepare(builder, name, data_dir)
  source = _tfds_source(builder, split)
  key = dict(kind='tfds', name=builder.info.full_name, split=split, images=len(source),
             spec=dataclasses.asdict(spec), version=PREPROCESS_VERSION)
  label = _label(f'{name}-{split}', spec)
  return cached_pixels(cache.cache_path(cache_dir, label, key), key, len(source),
                       lambda i: source[i][key_name], spec, what=f'{name} ({split})',
                       name_of=lambda i: f'example {i}')


# CelebA from its own files, without TensorFlow.

def celeba_files_present(data_dir: str) -> bool:
  manual = _manual_dir(data_dir)
  return all(os.path.exists(os.path.join(manual, f)) for f in CELEBA_FILES[:2])


def celeba_manual_pixels(data_dir: str, split: str, spec: Spec,
                         cache_dir: str) -> np.ndarray:
  """CelebA's aligned images read from img_align_celeba.zip, the split chosen by
  list_eval_partition.txt (train, validation, test, joined with +, or all);
  the images of a split in the order of their names, as tfds generates them."""
  manual = _manual_dir(data_dir)
  archive = os.path.join(manual, CELEBA_FILES[0])
  parts = split.split('+')
  if split != 'all' and not set(parts) <= set(CELEBA_SPLITS):
    raise UserError(f'--split={split}: reading CelebA from its files takes train, '
                    'validation, test (joined with +) or all.')
  wanted = set(CELEBA_SPLITS.values()) if split == 'all' else {
      CELEBA_SPLITS[p] for p in parts}
  with open(os.path.join(manual, CELEBA_FILES[1]), encoding='utf-8') as f:
    rows = [line.split() for line in f if line.strip()]
  names = sorted(r[0] for r in rows if int(r[1]) in wanted)
  try:
    with zipfile.ZipFile(archive) as z:
      members = {os.path.basename(m): m for m in z.namelist() if not m.endswith('/')}
  except (OSError, zipfile.BadZipFile) as e:
    raise UserError(f'{archive} cannot be read ({e}); download it again: '
                    f'{celeba_instructions(data_dir)}.') from None
  missing = [n for n in names if n not in members]
  if missing:
    raise UserError(f'{archive} lacks {len(missing)} images listed in '
                    f'{CELEBA_FILES[1]} (the first: {missing[0]}); download it again.')
  logging.info('Reading CelebA from its files in %s (without tensorflow-datasets).',
               manual)
  local = threading.local()

  def load(i):
    if not hasattr(local, 'zip'):  # a ZipFile per thread: reads seek the file
      local.zip = zipfile.ZipFile(archive)
    from PIL import Image  # pylint: disable=g-import-not-at-top
    with local.zip.open(members[names[i]]) as f, Image.open(f) as image:
      image.load()
      return image

  stat = os.stat(archive)
  key = dict(kind='celeba_files', split=split, images=len(names),
             archive=[stat.st_size, stat.st_mtime_ns], spec=dataclasses.asdict(spec),
             version=PREPROCESS_VERSION)
  label = _label(f'celeb_a-files-{split}', spec)
  return cached_pixels(cache.cache_path(cache_dir, label, key), key, len(names), load, spec,
                       what=f'celeb_a ({split}, from {archive})',
                       name_of=names.__getitem__)
