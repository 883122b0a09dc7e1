"""Checkpoints: exact resume, refused configs, NaN and disk faults, generate."""

import json
import os
import resource
import shutil
import signal

import jax
import numpy as np
import pytest
from flax import serialization

from wgan_jax import checkpoints, generate, input_pipeline, parallel, steps, train, writers
from wgan_jax.errors import UserError
from wgan_jax.state import create_state, root_key

from .conftest import tiny_config


def _arrays(state):
  return jax.device_get(serialization.to_state_dict(state))


def assert_same_state(a, b):
  jax.tree.map(np.testing.assert_array_equal, _arrays(a), _arrays(b))


def _template(config):
  dataset = input_pipeline.get_dataset(config)
  init_key, noise_key = jax.random.split(root_key(config))
  state = create_state(config, dataset.data_shape, init_key, axis_name=parallel.AXIS)
  noise = jax.random.normal(noise_key, (config.num_samples, config.nz))
  return dataset.data_shape, state, noise


def _gen_iters(workdir):
  return [r['gen_iter'] for r in writers.read_metrics(os.path.join(workdir, 'metrics.jsonl'))]


CONFIG = dict(num_gen_iters=4, checkpoint_every=2)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A finished 4-iteration run on the ring of Gaussians, checkpoints at 2 and 4."""
  config = tiny_config('gaussians8', **CONFIG)
  workdir = str(tmp_path_factory.mktemp('trained'))
  final = train.train(config, workdir)
  return config, workdir, final


@pytest.fixture(scope='module')
def template(trained):
  """(data shape, initial state, fixed noise) of the trained run's config."""
  return _template(trained[0])


def _copy(trained, tmp_path):
  config, workdir, final = trained
  copy = str(tmp_path / 'run')
  shutil.copytree(workdir, copy)
  return config.copy_and_resolve_references(), copy, final


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(trained, tmp_path,
                                                                  monkeypatch):
  config, whole_dir, whole = trained
  # Interrupt another run during its 4th generator iteration: after the
  # checkpoint of iteration 2 and the metrics of iteration 3.
  calls = []
  original = parallel.TrainIteration.__call__

  def interrupted(self, *args):
    calls.append(None)
    if len(calls) == 4:
      raise KeyboardInterrupt
    return original(self, *args)

  workdir = str(tmp_path / 'parts')
  monkeypatch.setattr(parallel.TrainIteration, '__call__', interrupted)
  with pytest.raises(KeyboardInterrupt):
    train.train(tiny_config('gaussians8', **CONFIG), workdir)
  monkeypatch.undo()
  assert checkpoints.Checkpointer(workdir).steps() == [2]
  assert _gen_iters(workdir) == [1, 2, 3]

  resumed = train.train(tiny_config('gaussians8', **CONFIG), workdir)
  assert_same_state(whole, resumed)  # exactly: same numbers, same programs
  # Iteration 3 was done twice, but is recorded once, as in the whole run.
  assert (writers.read_metrics(os.path.join(workdir, 'metrics.jsonl'))
          == writers.read_metrics(os.path.join(whole_dir, 'metrics.jsonl')))


def test_a_checkpoint_holds_everything_a_run_needs(trained, template):
  config, workdir, final = trained
  data_shape, initial, noise = template
  ckpt = checkpoints.Checkpointer(workdir, config, data_shape)
  assert ckpt.steps() == [2, 4]
  restored = ckpt.restore(initial, noise)
  assert restored.step == 4 and int(restored.state.gen_iter) == 4
  assert_same_state(restored.state, final)
  np.testing.assert_array_equal(restored.fixed_noise, noise)
  assert restored.data_position == steps.critic_steps_before(4, config)
  assert restored.config == json.loads(config.to_json())
  # The optimiser states are the trained ones, not fresh ones.
  assert any(np.abs(x).max() > 0 for x in jax.tree.leaves(restored.state.critic.opt_state))


def test_resuming_with_another_model_shape_is_refused(trained, tmp_path):
  config, workdir, _ = _copy(trained, tmp_path)
  config.update(ngf=32, nz=3, num_gen_iters=10, lr_gen=1e-4)
  with pytest.raises(UserError) as info:
    train.train(config, workdir)
  message = str(info.value)
  assert 'ngf 16 -> 32' in message and 'nz 2 -> 3' in message
  assert 'num_gen_iters' not in message and 'lr_gen' not in message
  assert '\n' not in message


def test_only_shape_options_are_refused(trained):
  config, _, _ = trained
  saved = json.loads(config.to_json())
  changed = config.copy_and_resolve_references()
  changed.update(num_gen_iters=99, sample_every=7, log_every=3, lr_critic=1.0,
                 generator='dcgan', rng_impl='threefry2x32')
  shape, other = checkpoints.config_changes(saved, changed)
  assert shape == ["generator 'mlp' -> 'dcgan'", "rng_impl 'rbg' -> 'threefry2x32'"]
  assert other == ['lr_critic 5e-05 -> 1.0']


def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(trained, template,
                                                                     tmp_path):
  config, workdir, _ = _copy(trained, tmp_path)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '4', 'state'))
  data_shape, initial, noise = template
  restored = checkpoints.Checkpointer(workdir, config, data_shape).restore(initial, noise)
  assert restored.step == 2


def test_a_non_finite_loss_stops_training_and_keeps_the_last_checkpoint(
    trained, template, tmp_path):
  config, workdir, final = _copy(trained, tmp_path)
  # An absurd learning rate: the generator's weights overflow in iteration 5,
  # its samples in iteration 6 are NaN, and so is the critic's loss.
  config.update(lr_gen=1e38, num_gen_iters=10, checkpoint_every=0)
  with pytest.raises(checkpoints.NonFiniteError,
                     match=r'^critic_\w+ is nan at generator iteration 6: training '
                     r'stopped. The last checkpoint, iteration 4, is intact'):
    train.train(config, workdir)
  data_shape, initial, noise = template
  ckpt = checkpoints.Checkpointer(workdir, config, data_shape)
  assert ckpt.steps() == [2, 4]
  assert_same_state(ckpt.restore(initial, noise).state, final)


def test_a_non_finite_state_is_never_saved(trained, template, tmp_path):
  config, workdir, final = _copy(trained, tmp_path)
  data_shape, _, noise = template
  ckpt = checkpoints.Checkpointer(workdir, config, data_shape)
  params = jax.tree.map(lambda x: x * np.inf, final.generator.params)
  broken = final.replace(generator=final.generator.replace(params=params))
  with pytest.raises(checkpoints.NonFiniteError,
                     match=r"non-finite values in \['generator'\]\['params'\].* after "
                     'generator iteration 5: training stopped. The last checkpoint, '
                     'iteration 4, is intact'):
    ckpt.save(5, broken, noise, 99)
  ckpt.close()
  assert ckpt.steps() == [2, 4]


def test_a_disk_that_refuses_a_checkpoint_is_a_clear_error(trained, template, tmp_path):
  config, workdir, final = _copy(trained, tmp_path)
  data_shape, initial, noise = template
  ckpt = checkpoints.Checkpointer(workdir, config, data_shape)
  # Files may not grow past 4 kB: the checkpoint's arrays take more, so their
  # writes fail, as on a full disk.
  limits = resource.getrlimit(resource.RLIMIT_FSIZE)
  handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))
  try:
    with pytest.raises(UserError) as info:
      ckpt.save(5, final, noise, 99)
      ckpt.wait()
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    signal.signal(signal.SIGXFSZ, handler)
  assert str(info.value) == (
      f'could not write the checkpoint of iteration 5 to {ckpt.path} (File too '
      'large); the last complete checkpoint is iteration 4. Free some space or '
      'pass a --workdir you can write to, then run again.')
  ckpt.close()
  # The half-written checkpoint is not taken for one; a run resumes from 4.
  ckpt = checkpoints.Checkpointer(workdir, config, data_shape)
  assert ckpt.steps() == [2, 4]
  assert ckpt.restore(initial, noise).step == 4


def test_a_checkpoint_folder_that_cannot_be_made_is_a_clear_error(trained, tmp_path):
  (tmp_path / 'checkpoints').write_text('a file in the way')
  with pytest.raises(UserError, match='cannot use .*checkpoints for checkpoints'):
    checkpoints.Checkpointer(str(tmp_path), trained[0], (2,))


def test_generate_is_reproducible_and_reads_any_checkpoint(trained, tmp_path):
  _, workdir, _ = trained
  a, restored = generate.generate(workdir, 20, seed=0)  # 2 batches of 16
  assert restored.step == 4 and a.shape == (20, 2) and np.all(np.isfinite(a))
  np.testing.assert_array_equal(generate.generate(workdir, 20, seed=0)[0], a)
  assert not np.array_equal(generate.generate(workdir, 20, seed=1)[0], a)
  early, restored = generate.generate(workdir, 20, seed=0, step=2)
  assert restored.step == 2 and not np.array_equal(early, a)
  path = str(tmp_path / 'points.npy')
  generate.write(path, a, restored)
  np.testing.assert_array_equal(np.load(path), a)
  generate.write(str(tmp_path / 'points.png'), a, restored)
  assert (tmp_path / 'points.png').stat().st_size > 1000
  with pytest.raises(UserError, match=r'there are \[2, 4\]'):
    generate.generate(workdir, 10, step=3)
  with pytest.raises(UserError, match='name a .png or a .npy'):
    generate.write(str(tmp_path / 'points.txt'), a, restored)
  with pytest.raises(UserError, match='train first'):
    generate.generate(str(tmp_path / 'empty'), 10)


def test_generate_writes_an_image_grid(tmp_path):
  from PIL import Image
  config = tiny_config()
  workdir = str(tmp_path / 'digits')
  data_shape, state, noise = _template(config)
  ckpt = checkpoints.Checkpointer(workdir, config, data_shape)
  ckpt.save(1, state, noise, 0)
  ckpt.close()
  images, restored = generate.generate(workdir, 20, seed=3)
  assert images.shape == (20, 16, 16, 1) and restored.data_shape == (16, 16, 1)
  assert images.min() >= -1 and images.max() <= 1
  generate.write(str(tmp_path / 'grid.png'), images, restored)
  with Image.open(tmp_path / 'grid.png') as im:
    # 5 x 4 images of 16 + 2 pixels (and a 2-pixel edge), enlarged 4x.
    assert im.mode == 'L' and im.size == (4 * (2 + 5 * 18), 4 * (2 + 4 * 18))
