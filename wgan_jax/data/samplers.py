"""The order in which examples are used, on the host.

Examples are used in epochs, each a fresh permutation (the reference's
shuffling ``DataLoader``); batch k of a run is a pure function of the seed and
k, so a resumed run sees the same data. ``gather`` reads a batch's examples;
``Prefetched`` runs a producer of batch k on a thread, ahead of use. Nothing
here knows devices: ``wgan_jax.parallel`` places what these give.
"""

from __future__ import annotations

import functools
import queue
import threading
import weakref

import numpy as np

from wgan_jax.errors import UserError


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

def gather(examples: np.ndarray, indices: np.ndarray) -> np.ndarray:
  """examples[indices], read in file order (cheaper on a memory map)."""
  order = np.argsort(indices, kind='stable')
  out = np.empty((len(indices), *examples.shape[1:]), examples.dtype)
  out[order] = examples[indices[order]]
  return out



def host_batch(examples: np.ndarray, sampler, k: int):
  """Batch k's indices, (B,) or (seeds, B), and its examples, (B, ...) or
  (seeds, B, ...), gathered on the host."""
  indices = sampler.indices(k, 1)[0]
  batch = gather(examples, indices.ravel()).reshape(*indices.shape, *examples.shape[1:])
  return indices, batch


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



class Prefetched:
  """``produce(k)`` for k = first, first + 1, ... on a thread, up to ``depth``
  results ahead. ``take(first, n)`` returns results [first, first + n); calls
  are expected in order (each ``first`` the last ``first + n``), any other
  ``first`` starts the thread again from there. ``produce`` should be a
  function of the data alone, so that the thread keeps no reference to the
  owner and dropping the owner stops the thread."""

  def __init__(self, produce, depth: int):
    self._produce = produce
    self._depth = max(1, depth)
    self._prefetcher: _Prefetcher | None = None
    self._finalizer = None

  def _restart(self, first: int) -> None:
    self.close()
    self._prefetcher = _Prefetcher(self._produce, first, self._depth)
    self._finalizer = weakref.finalize(self, self._prefetcher.close)

  def take(self, first: int, num: int) -> list:
    if self._prefetcher is None or self._prefetcher.next != first:
      self._restart(first)
    return [self._prefetcher.get() for _ in range(num)]

  def close(self) -> None:
    """Stops the thread (also done when this is garbage collected)."""
    if self._finalizer is not None:
      self._finalizer()
    self._prefetcher = self._finalizer = None
