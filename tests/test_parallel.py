"""Data parallelism: N devices with global batch B compute what 1 device does;
the sources put the same batches on the devices, resident or host-fed."""

import gc
import threading

import jax
import numpy as np
import pytest

from wgan_jax import data as data_lib, parallel, state as state_lib, steps
from wgan_jax.errors import UserError


# Float32 sums over a split batch are added in another order; after several
# RMSProp steps the parameters agree to this.
RTOL, ATOL = 1e-4, 1e-6


def _run(config, devices, train_iterations, num_iters=3):
  dataset = data_lib.get_dataset(config)
  state = state_lib.create_state(config, dataset.data_shape,
                                 state_lib.root_key(config),
                                 axis_name=parallel.AXIS)
  source = parallel.DeviceResidentSource(dataset, config.batch_size,
                                               config.seed, devices)
  state, history = train_iterations(config, parallel.TrainIteration(config, devices),
                                     devices, state, source, num_iters)
  return state, [{k: float(v[0]) for k, v in m.items()} for m in history]


@pytest.mark.slow
@pytest.mark.parametrize('dataset', ['digits', 'gaussians8'])
def test_four_devices_equal_one_device(devices, dataset, tiny_config, train_iterations, assert_states_close):
  config = tiny_config(dataset, batch_size=16)
  one, h_one = _run(config, devices[:1], train_iterations)
  four, h_four = _run(config, devices, train_iterations)
  assert_states_close(one, four)
  for m1, m4 in zip(h_one, h_four):
    for k in m1:
      np.testing.assert_allclose(m1[k], m4[k], rtol=RTOL, atol=ATOL, err_msg=k)


@pytest.mark.slow
def test_two_devices_with_batchnorm_everywhere(devices, tiny_config, train_iterations, assert_states_close):
  # Extra layers put BatchNorm in both nets at several depths.
  config = tiny_config(batch_size=8, n_extra_layers=1)
  one, _ = _run(config, devices[:1], train_iterations, num_iters=2)
  two, _ = _run(config, devices[:2], train_iterations, num_iters=2)
  assert_states_close(one, two)


# scan: the accelerators' default; unroll: the critic steps traced one after another.
@pytest.mark.slow
@pytest.mark.parametrize('mode', ['scan', 'unroll'])
def test_fused_iteration_equals_per_step_calls(devices, mode, tiny_config, train_iterations,
                                               assert_states_close):
  config = tiny_config(iteration_mode='steps')
  reference, h_ref = _run(config, devices[:2], train_iterations, num_iters=2)
  config.iteration_mode = mode
  fused, h_fused = _run(config, devices[:2], train_iterations, num_iters=2)
  assert_states_close(reference, fused, rtol=1e-5, atol=1e-7)
  assert h_ref[-1].keys() == h_fused[-1].keys()


def test_batch_must_divide_over_devices():
  with pytest.raises(UserError, match='does not divide over 4 devices'):
    parallel.per_device_batch(10, 4)
  with pytest.raises(UserError, match='must be positive'):
    parallel.per_device_batch(0, 4)
  assert parallel.per_device_batch(12, 4) == 3


def test_shard_batches_gives_each_device_its_slice():
  batches = np.arange(2 * 8).reshape(2, 8)
  sharded = parallel.shard_batches(batches, 4)
  assert sharded.shape == (4, 2, 2)
  np.testing.assert_array_equal(sharded[1, 0], [2, 3])
  np.testing.assert_array_equal(sharded[3, 1], [14, 15])
  # A process of a multi-process run feeds only its devices' slices.
  np.testing.assert_array_equal(parallel.shard_batches(batches, 4, positions=[2, 3]),
                                sharded[2:])


def test_one_process_maps_over_its_own_devices(devices):
  assert parallel.mapped_devices() == devices
  assert parallel.local_positions(devices) == [0, 1, 2, 3]


def test_unknown_devices_and_modes_are_user_errors():
  with pytest.raises(UserError, match='local device'):
    parallel.local_devices(99)
  with pytest.raises(UserError, match='iteration_mode'):
    parallel.resolve_mode('fast')


# Real examples on the devices: resident or host-fed, the same batches.

def _pixels(n=37, size=16, seed=0):
  rng = np.random.default_rng(seed)
  return data_lib.Dataset('pixels', rng.integers(0, 256, (n, size, size, 3),
                                                       dtype=np.uint8))


def _prefetch_threads():
  return [t for t in threading.enumerate() if t.name == 'wgan_jax-prefetch']


def test_host_source_gives_the_resident_sources_batches(devices):
  data = _pixels()
  resident = parallel.DeviceResidentSource(data, 8, seed=3, devices=devices)
  host = parallel.HostSource(data, 8, seed=3, devices=devices, prefetch=4)
  assert resident.data.dtype == np.uint8  # pixels stay uint8 on the devices

  def expected(first, n):
    _, indices = resident.batches(first, n)
    return data.examples[np.asarray(indices)]  # (devices, n, 2, H, W, C)

  first = 0
  for n in (5, 1, 3, 9):  # 4 batches per epoch: these cross epochs
    none, examples = host.batches(first, n)
    assert none is None and examples.shape == (4, n, 2, 16, 16, 3)
    assert examples.dtype == np.uint8
    assert examples.sharding.is_equivalent_to(parallel.device_sharding(devices), 6)
    np.testing.assert_array_equal(np.asarray(examples), expected(first, n))
    first += n
  # A resumed run asks for a batch out of sequence: the thread starts again there.
  np.testing.assert_array_equal(np.asarray(host.batches(7, 2)[1]), expected(7, 2))
  host.close()
  assert not _prefetch_threads()


def test_dropping_a_host_source_stops_its_thread(devices):
  host = parallel.HostSource(_pixels(), 4, seed=0, devices=devices, prefetch=2)
  host.batches(0, 1)
  assert len(_prefetch_threads()) == 1
  del host
  gc.collect()
  assert not _prefetch_threads()


def test_errors_in_the_thread_reach_the_training_loop(devices):

  class Broken(np.ndarray):

    def __getitem__(self, index):
      raise OSError('disk gone')

  data = _pixels()
  broken = data_lib.Dataset('broken', data.examples.view(Broken))
  host = parallel.HostSource(broken, 4, seed=0, devices=devices)
  with pytest.raises(OSError, match='disk gone'):
    host.batches(0, 2)
  host.close()


def test_training_on_host_fed_and_resident_pixels_is_the_same(devices, tiny_config):
  # MLP nets on the pixels: the same data path, a fraction of DCGAN's compile time.
  config = tiny_config(batch_size=8, generator='mlp', critic='mlp', ngf=16, ndf=16)
  devices = devices[:2]
  data = _pixels()
  state = parallel.replicate(state_lib.create_state(
      config, (16, 16, 3), state_lib.root_key(config), axis_name=parallel.AXIS), devices)
  iteration = parallel.TrainIteration(config, devices)
  n = steps.critic_iterations(0, config)
  results = []
  for source in (parallel.DeviceResidentSource(data, 8, config.seed, devices),
                 parallel.HostSource(data, 8, config.seed, devices)):
    # (TrainIteration donates the state it is given.)
    results.append(iteration(jax.tree.map(lambda x: x.copy(), state),
                             *source.batches(0, n)))
  (a, ma), (b, mb) = results
  np.testing.assert_allclose(float(ma['wasserstein'][0]), float(mb['wasserstein'][0]),
                             rtol=1e-6)
  for x, y in zip(jax.tree.leaves(a.critic.params), jax.tree.leaves(b.critic.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def test_data_on_device_auto_uses_the_devices_memory(devices, tiny_config):
  memory = parallel.device_memory(devices)
  assert memory > 2**20
  assert parallel.keep_on_device('auto', 1000, devices)
  assert not parallel.keep_on_device('auto', memory, devices)
  assert parallel.keep_on_device('true', memory, devices)
  assert not parallel.keep_on_device('false', 10, devices)
  with pytest.raises(UserError, match="--data_on_device='maybe': choose auto, true"):
    parallel.keep_on_device('maybe', 10, devices)
  data = _pixels()
  for setting, kind in (('auto', parallel.DeviceResidentSource),
                        ('false', parallel.HostSource)):
    source = parallel.make_source(data, tiny_config(data_on_device=setting),
                                        devices)
    assert isinstance(source, kind)
    if kind is parallel.HostSource:
      source.close()
