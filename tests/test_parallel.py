"""Data parallelism: N devices with global batch B compute what 1 device does."""

import numpy as np
import pytest

from wgan_jax import data as data_lib, parallel, state as state_lib
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


@pytest.mark.parametrize('dataset', ['digits', 'gaussians8'])
def test_four_devices_equal_one_device(devices, dataset, tiny_config, train_iterations, assert_states_close):
  config = tiny_config(dataset, batch_size=16)
  one, h_one = _run(config, devices[:1], train_iterations)
  four, h_four = _run(config, devices, train_iterations)
  assert_states_close(one, four)
  for m1, m4 in zip(h_one, h_four):
    for k in m1:
      np.testing.assert_allclose(m1[k], m4[k], rtol=RTOL, atol=ATOL, err_msg=k)


def test_two_devices_with_batchnorm_everywhere(devices, tiny_config, train_iterations, assert_states_close):
  # Extra layers put BatchNorm in both nets at several depths.
  config = tiny_config(batch_size=8, n_extra_layers=1)
  one, _ = _run(config, devices[:1], train_iterations, num_iters=2)
  two, _ = _run(config, devices[:2], train_iterations, num_iters=2)
  assert_states_close(one, two)


@pytest.mark.parametrize('mode', ['scan'])  # (unroll: the same program, not a default)
def test_fused_iteration_equals_per_step_calls(devices, mode, tiny_config, train_iterations, assert_states_close):
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
