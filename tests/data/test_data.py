"""Sources: device-resident and host-fed batches are the same batches; the
stacked digits dataset."""

import gc
import threading

import jax
import numpy as np
import pytest

from wgan_jax import configs, data as data_lib, parallel, state as state_lib, steps
from wgan_jax.errors import UserError



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


def test_stacked_digits_stack_three_independent_digits():
  images, modes = data_lib.load_stacked_digits(16)
  assert images.shape == (data_lib.STACKED_SIZE, 16, 16, 3)
  assert images.dtype == np.uint8 and modes.shape == (len(images),)
  # Each channel is one of the digits (as uint8 pixels), and the mode spells
  # the three digits' classes.
  digits = data_lib.load_digits(16)[..., 0]
  pixels = np.round((digits + 1) * 127.5).astype(np.uint8)
  classes = {}
  for image, label in zip(pixels, data_lib.digit_labels()):
    classes.setdefault(image.tobytes(), set()).add(label)
  for image, mode in zip(images[:300], modes[:300]):
    for c, place in enumerate((100, 10, 1)):
      assert mode // place % 10 in classes[np.ascontiguousarray(image[..., c]).tobytes()]
  # All 1000 triples occur, each about equally often; the channels are
  # drawn independently.
  counts = np.bincount(modes, minlength=1000)
  assert len(counts) == 1000 and counts.min() > 0
  assert counts.max() < 3 * counts.mean()
  positions = np.stack([modes // 100, modes // 10 % 10, modes % 10])
  assert np.abs(np.corrcoef(positions) - np.eye(3)).max() < 0.03
  # The same images every time: the data seed is fixed.
  again, _ = data_lib.load_stacked_digits(16, count=10)
  np.testing.assert_array_equal(again, images[:10])


def test_stacked_digits_is_an_embedded_dataset_of_three_channels(tiny_config):
  # (uint8 pixels of 16x16x3 train like any others: see
  # test_training_on_host_fed_and_resident_pixels_is_the_same.)
  assert 'stacked_digits' in data_lib.EMBEDDED
  assert configs.get_config('stacked_digits').channels == 3
  data = data_lib.get_dataset(tiny_config('stacked_digits'))
  assert data.data_shape == (16, 16, 3) and data.examples.dtype == np.uint8
  assert data.is_image and len(data) == data_lib.STACKED_SIZE
  with pytest.raises(UserError, match='--channels=3'):
    data_lib.get_dataset(tiny_config('stacked_digits', channels=1))
