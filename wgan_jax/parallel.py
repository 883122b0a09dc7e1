"""The one place that maps the pure steps over devices and fuses them.

A *generator iteration* is ``n_critic`` critic steps followed by one
generator step. ``make_train_iteration`` compiles it with ``jax.pmap`` over
the axis ``'batch'``: each device holds a replica of the state and a slice of
every global batch; gradients are averaged over devices and BatchNorm uses the
statistics of the global batch, so N devices compute what one device computes
with the whole batch.

Latents are drawn on the devices: critic step j of generator iteration i uses
``normal(fold_in(fold_in(rng, i), j), (global_batch, nz))`` and each device
takes its slice, so the numbers do not depend on the device count (WGAN-GP's
interpolation weights likewise, from ``fold_in`` of that key with 1). Real
examples come either as a device-resident array plus host-chosen indices
(``DeviceResidentSource``), or as batches gathered on the host and put on the
devices ahead of use from a thread (``HostSource``); ``make_source`` chooses
(``--data_on_device=auto|true|false``). The samplers of ``wgan_jax.data``
choose the indices; only this module puts anything on a device.

With ``num_seeds`` K > 1, K independent runs train at once: every leaf of
the state, every batch and every metric has a seed axis after the device
axis, and the step functions are mapped over it inside the ``pmap``, as
``seeds_mode`` says (``wgan_jax.seeds``: ``vmap``, or the seeds one after
another, which XLA:CPU runs faster for convolutional nets). Each seed draws
its random numbers from its own key exactly as a run of its own would, so
seed k's run is the single run with its seed.

In a multi-process run (``initialize_distributed``) the pmap spans every
process's devices; each process feeds only its own devices' slices of every
global batch (``local_positions``), and the slices of device ``k`` of the
axis are the same as in a one-process run with as many devices;
every process feeds them the same way (from the host if any one process
would).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from wgan_jax import configs, pixels, seeds, steps
from wgan_jax.data import samplers
from wgan_jax.errors import UserError
from wgan_jax.state import WGANState

AXIS = 'batch'
MODES = configs.CHOICES['iteration_mode'][0]


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Joins a multi-process run (``jax.distributed.initialize``).

  Without arguments, the cluster is detected (Cloud TPU, SLURM, Open MPI,
  ...); otherwise process ``process_id`` of ``num_processes`` meets the
  others at ``coordinator_address`` (host:port of process 0). On CPU the
  processes talk through gloo.
  """
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes,
                               process_id=process_id)
  except (ValueError, RuntimeError) as e:
    raise UserError(f'cannot join the multi-process run ({str(e).splitlines()[0]}); '
                    'check --coordinator_address, --num_processes and '
                    '--process_id.') from e


def any_process(flag: bool) -> bool:
  """True on every process if ``flag`` is true on any (a collective: every
  process of the run must call it at the same point)."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  flags_ = multihost_utils.process_allgather(np.int32(bool(flag)))
  return bool(np.asarray(flags_).any())


def mapped_devices(num_devices: int = 0) -> list[jax.Device]:
  """The devices a run maps over, in the order of the pmap axis.

  One process: its first ``num_devices`` (0: all). Several processes: every
  device of every process (then ``num_devices`` must be 0).
  """
  if jax.process_count() == 1:
    return local_devices(num_devices)
  if num_devices:
    raise UserError(f'--num_devices={num_devices}: a multi-process run uses every '
                    'device of every process; pass 0.')
  return jax.devices()


def local_positions(devices: Sequence[jax.Device]) -> list[int]:
  """Where this process's devices sit on the pmap axis over ``devices``."""
  me = jax.process_index()
  return [k for k, d in enumerate(devices) if d.process_index == me]


def local_devices(num_devices: int = 0) -> list[jax.Device]:
  devices = jax.local_devices()
  if num_devices < 0 or num_devices > len(devices):
    raise UserError(f'--num_devices={num_devices}: this machine has '
                    f'{len(devices)} local device(s); pass 0 to use all.')
  return devices[:num_devices] if num_devices else devices


def per_device_batch(batch_size: int, num_devices: int) -> int:
  if batch_size <= 0:
    raise UserError(f'--batch_size={batch_size}: must be positive.')
  if batch_size % num_devices:
    raise UserError(
        f'--batch_size={batch_size} does not divide over {num_devices} devices; '
        f'pass a multiple of {num_devices} or --num_devices=1.')
  return batch_size // num_devices


def replicate(tree, devices: Sequence[jax.Device]):
  """A copy of ``tree`` on each of this process's ``devices``, laid out as
  pmap lays out its outputs.

  (flax's ``replicate`` gives another sharding, and every pmapped function
  then compiles twice: once for it, once for its own outputs.)
  """
  n = len(local_positions(devices))
  stacked = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))),
                         tree)
  return jax.pmap(lambda t: t, axis_name=AXIS, devices=list(devices))(stacked)


def device_sharding(devices: Sequence[jax.Device]) -> jax.sharding.Sharding:
  """The layout of pmap's arrays over ``devices`` (a leading device axis).

  Arrays put on the devices with it go into the pmapped functions as they are.
  """
  return replicate(np.zeros((), np.int8), devices).sharding


def unreplicate(tree):
  """The first device's copy of a replicated tree (every leaf has a device axis)."""
  return jax.tree.map(lambda x: x.addressable_shards[0].data[0], tree)


def shard_batches(batches: np.ndarray, num_devices: int,
                  positions: Sequence[int] | None = None) -> np.ndarray:
  """(n, B, ...) global batches -> (devices, n, B / devices, ...).

  ``positions`` keeps the slices of those devices only (this process's, in a
  multi-process run).
  """
  n, b = batches.shape[:2]
  x = batches.reshape(n, num_devices, b // num_devices, *batches.shape[2:])
  x = np.swapaxes(x, 0, 1)
  if positions is not None and len(positions) < num_devices:
    x = x[np.asarray(positions)]
  return x


def resolve_mode(mode: str) -> str:
  """'auto': per-step calls on CPU (XLA runs convs inside a scan slowly
  there), one fused scan on accelerators."""
  configs.check_choice('iteration_mode', mode)
  if mode == 'auto':
    return 'steps' if jax.default_backend() == 'cpu' else 'scan'
  return mode


class TrainIteration:
  """Runs generator iterations on the devices, compiled once per critic count.

  Call it as ``state, metrics = it(state, data, batches)``. ``state`` is
  replicated over the devices; ``data`` is the device-resident dataset
  (replicated) with ``batches`` int32 indices of shape (devices, n_critic, b),
  or ``data=None`` with ``batches`` the examples themselves, shape
  (devices, n_critic, b, ...). ``metrics`` are the last critic step's and the
  generator step's, as host floats. With ``config.num_seeds`` K > 1 the state
  has a seed axis after the device axis, (devices, K, ...), the batches after
  n_critic, (devices, n_critic, K, b, ...), and the metrics (devices, K).
  """

  def __init__(self, config, devices: Sequence[jax.Device]):
    self.devices = list(devices)
    self.num_devices = len(self.devices)
    self.num_local = len(local_positions(self.devices))
    self.batch_size = config.batch_size
    self.local_batch = per_device_batch(config.batch_size, self.num_devices)
    self.nz = config.nz
    self.rng_impl = config.rng_impl
    self.mode = resolve_mode(config.iteration_mode)
    self.num_seeds = config.num_seeds
    self.seeds_mode = seeds.resolve_mode(config.get('seeds_mode', 'auto'), config,
                                         one_process=True)
    self.penalty = config.loss == 'wgan-gp'
    self._critic_step = self._seeded(functools.partial(
        steps.critic_step, clip=config.clip, clip_when=config.clip_when,
        loss=config.loss, gp_weight=config.gp_weight, axis_name=AXIS))
    self._generator_step = self._seeded(functools.partial(
        steps.generator_step, loss=config.loss, axis_name=AXIS))
    # On several CPU devices, XLA's collectives deadlock once a hundred or so
    # computations are queued (the threads that would run the last device's
    # part are all taken by others waiting for it: jax 0.10.2, in one process
    # or across processes; compare jax issue 25861). The 100 critic steps of
    # a warm-up iteration get there, so on CPU wait for each call.
    self._wait = jax.default_backend() == 'cpu' and self.num_devices > 1
    self._fused: dict[int, Callable] = {}
    pmap = functools.partial(jax.pmap, axis_name=AXIS, devices=self.devices,
                             donate_argnums=(0,))
    self._p_critic = pmap(self._one_critic_step)
    self._p_generator = pmap(self._one_generator_step,
                             static_broadcasted_argnums=(1,))
    self._pmap = pmap

  # Per-device pieces (traced under pmap).

  def _seeded(self, fn):
    return fn if self.num_seeds == 1 else seeds.over_seeds(fn, self.seeds_mode)

  def _randoms(self, rng, gen_iter, j):
    """This device's slice of the latents of critic step j (and, for
    WGAN-GP, of the interpolation weights), as a tuple of step arguments."""
    key = jax.random.wrap_key_data(rng, impl=self.rng_impl)
    key = jax.random.fold_in(jax.random.fold_in(key, gen_iter), j)
    start = jax.lax.axis_index(AXIS) * self.local_batch
    z = jax.random.normal(key, (self.batch_size, self.nz), jnp.float32)
    out = (jax.lax.dynamic_slice_in_dim(z, start, self.local_batch),)
    if self.penalty:
      eps = jax.random.uniform(jax.random.fold_in(key, 1), (self.batch_size,))
      out += (jax.lax.dynamic_slice_in_dim(eps, start, self.local_batch),)
    return out

  def _latents(self, state: WGANState, j):
    if self.num_seeds == 1:
      return self._randoms(state.rng, state.gen_iter, j)
    # Seed by seed, not vmapped: rbg keys give other numbers under vmap.
    return jax.lax.map(lambda s: self._randoms(*s, j), (state.rng, state.gen_iter))

  @staticmethod
  def _reals(data, batch):
    return pixels.to_float(batch if data is None else data[batch])

  def _one_critic_step(self, state, data, batch, j):
    return self._critic_step(state, self._reals(data, batch),
                             *self._latents(state, j))

  def _one_generator_step(self, state, n_critic):
    return self._generator_step(state, self._latents(state, n_critic)[0])

  def _iteration(self, state, data, batches, *, unroll: bool):
    n_critic = batches.shape[0]
    if unroll:
      for j in range(n_critic):
        state, c_metrics = self._one_critic_step(state, data, batches[j], j)
    else:
      def body(state, xs):
        batch, j = xs
        return self._one_critic_step(state, data, batch, j)
      state, c_metrics = jax.lax.scan(body, state,
                                      (batches, jnp.arange(n_critic)))
      c_metrics = jax.tree.map(lambda m: m[-1], c_metrics)
    state, g_metrics = self._one_generator_step(state, n_critic)
    return state, {**c_metrics, **g_metrics}

  def _fused_for(self, n_critic: int) -> Callable:
    if n_critic not in self._fused:
      self._fused[n_critic] = self._pmap(functools.partial(
          self._iteration, unroll=self.mode == 'unroll'))
    return self._fused[n_critic]

  def __call__(self, state, data, batches):
    n_critic = batches.shape[1]
    if self.mode == 'steps':
      metrics = None
      for j in range(n_critic):
        state, metrics = self._p_critic(
            state, data, batches[:, j], np.full(self.num_local, j, np.int32))
        if self._wait:
          jax.block_until_ready(state)
      state, g_metrics = self._p_generator(state, n_critic)
      metrics = {**metrics, **g_metrics}
    else:
      state, metrics = self._fused_for(n_critic)(state, data, batches)
    if self._wait:
      jax.block_until_ready(state)
    return state, metrics



# Real examples on the devices.


def _shard(batches: np.ndarray, seeded: bool, num_devices: int, positions):
  """(n, B, ...) -> (devices, n, B / devices, ...), or with seeds
  (n, seeds, B, ...) -> (devices, n, seeds, B / devices, ...)."""
  if not seeded:
    return shard_batches(batches, num_devices, positions)
  n, k = batches.shape[:2]
  x = shard_batches(batches.reshape(n * k, *batches.shape[2:]), num_devices, positions)
  return x.reshape(len(x), n, k, *x.shape[2:])


def put_replicated(array: np.ndarray, devices) -> jax.Array:
  """A copy of ``array`` on each device, (devices, *shape), laid out as pmap
  takes it; one transfer per device and no second copy on it."""
  local = [devices[k] for k in local_positions(devices)]
  array = np.asarray(array)[None]
  # pmap's arrays hold this process's devices only (a multi-process run too).
  shards = [jax.device_put(array, d) for d in local]
  return jax.make_array_from_single_device_arrays(
      (len(local), *array.shape[1:]), device_sharding(devices), shards)


class DeviceResidentSource:
  """Examples held on every device; a batch travels as indices, never as pixels.

  ``batches(first, n)`` gives what ``TrainIteration`` takes for the critic
  steps [first, first + n) of a run: the resident array and the indices,
  (devices, n, batch / devices), for this process's devices
  ((devices, n, seeds, batch / devices) for a list of seeds). uint8 pixels
  stay uint8 on the devices (a quarter of float32) and become floats after
  the gather.
  """

  def __init__(self, dataset, batch_size: int, seed, devices):
    self.sampler = samplers.make_sampler(len(dataset), batch_size, seed)
    self._shard = functools.partial(
        _shard, seeded=isinstance(self.sampler, samplers.SeedsSampler),
        num_devices=len(devices), positions=local_positions(devices))
    self.data = put_replicated(dataset.examples, devices)

  def batches(self, first_batch: int, num_batches: int):
    return self.data, self._shard(self.sampler.indices(first_batch, num_batches))


def _put_batch(examples, sampler, sharding, num_devices: int, positions, k: int):
  """Batch k on the devices: (devices, batch / devices, ...), or for
  several seeds (devices, seeds, batch / devices, ...)."""
  # Every process gathers the same global batch and puts its devices' slices.
  indices, batch = samplers.host_batch(examples, sampler, k)
  x = _shard(batch[None], indices.ndim == 2, num_devices, positions)[:, 0]
  return jax.device_put(x, sharding)


class HostSource:
  """Batches gathered on the host and put on the devices ahead of use.

  A thread gathers batch after batch (in the order the sampler gives, so
  batch k is the same as in ``DeviceResidentSource``) and puts each on the
  devices, up to ``prefetch`` batches ahead of the training loop.
  ``batches(first, n)`` returns ``(None, examples)`` with examples
  (devices, n, batch / devices, ...), already on the devices. Calls are
  expected in order (each ``first`` the last ``first + n``); any other
  ``first`` starts the thread again from there.
  """

  def __init__(self, dataset, batch_size: int, seed, devices, prefetch: int = 32):
    per_device_batch(batch_size, len(devices))
    self.sampler = samplers.make_sampler(len(dataset), batch_size, seed)
    sharding = device_sharding(devices)
    self._prefetched = samplers.Prefetched(functools.partial(
        _put_batch, dataset.examples, self.sampler, sharding, len(devices),
        local_positions(devices)), prefetch)
    self._stack = jax.jit(lambda *xs: jnp.stack(xs, axis=1), out_shardings=sharding)

  def batches(self, first_batch: int, num_batches: int):
    return None, self._stack(*self._prefetched.take(first_batch, num_batches))

  def close(self) -> None:
    """Stops the thread (also done when the source is garbage collected)."""
    self._prefetched.close()


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


def make_source(dataset, config, devices):
  """The source ``config.data_on_device`` asks for (auto: resident where the
  examples fit in a quarter of a device's memory, else host-fed), with the
  batches of each of ``config.num_seeds`` seeds when that is over 1. The
  processes of a multi-process run agree: host-fed if any one would be."""
  nbytes = dataset.examples.nbytes
  seed = config.seed
  if config.num_seeds > 1:
    seed = [config.seed + k for k in range(config.num_seeds)]
  on_device = keep_on_device(config.data_on_device, nbytes, devices)
  if any_process(not on_device):
    # Every process must run the same step program (the two sources give
    # different ones, and their collectives would wait on each other for ever).
    if on_device:
      logging.warning('Feeding from the host, as another process of this run does '
                      '(--data_on_device=%s here).', config.data_on_device)
    on_device = False
  if on_device:
    logging.info('Keeping the %d examples (%.1f MB, %s) on each device.',
                 len(dataset), nbytes / 2**20, dataset.examples.dtype)
    return DeviceResidentSource(dataset, config.batch_size, seed, devices)
  logging.info('Feeding the %d examples (%.1f MB, %s) from the host, %d batches '
               'ahead.', len(dataset), nbytes / 2**20, dataset.examples.dtype,
               config.prefetch_batches)
  return HostSource(dataset, config.batch_size, seed, devices,
                    prefetch=config.prefetch_batches)
