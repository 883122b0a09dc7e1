"""--num_seeds: K runs at once, each the single run of its seed."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from flax import serialization

from wgan_jax import configs, data as data_lib, generate, parallel, train, writers
from wgan_jax import seeds as seeds_lib
from wgan_jax import state as state_lib
from wgan_jax.errors import UserError


# vmap batches the matrix products and convolutions of the seeds, which may
# sum in another order; after a few steps the parameters agree to this.
RTOL, ATOL = 1e-4, 1e-6


def _seeded_vs_single(train_iterations, config, devices, num_seeds=2, num_iters=2,
                      seeds_mode='auto'):
  dataset = data_lib.get_dataset(config)
  seeds = [config.seed + k for k in range(num_seeds)]
  keys = [jax.random.split(state_lib.root_key(train.seed_config(config, s)))[0]
          for s in seeds]
  seeded_config = config.copy_and_resolve_references()
  seeded_config.num_seeds = num_seeds
  seeded_config.seeds_mode = seeds_mode
  states = state_lib.create_states(config, dataset.data_shape, jax.numpy.stack(keys),
                                   axis_name=parallel.AXIS)
  source = parallel.DeviceResidentSource(dataset, config.batch_size, seeds,
                                               devices)
  seeded = train_iterations(seeded_config,
                             parallel.TrainIteration(seeded_config, devices),
                             devices, states, source, num_iters)
  iteration = parallel.TrainIteration(config, devices)  # one compile for both
  singles = []
  for k, seed in enumerate(seeds):
    # create_state's state for seed k (test_initial_states_are_those_of_single_runs).
    state = jax.tree.map(lambda x, k=k: x[k], states)
    source = parallel.DeviceResidentSource(dataset, config.batch_size, seed,
                                                 devices)
    singles.append(train_iterations(config, iteration, devices, state, source,
                                     num_iters))
  return seeded, singles


def test_initial_states_are_those_of_single_runs(tiny_config):
  config = tiny_config('gaussians8')
  keys = [jax.random.key(s, impl=config.rng_impl) for s in (7, 8)]
  states = state_lib.create_states(config, (2,), jax.numpy.stack(keys))
  for k, key in enumerate(keys):
    jax.tree.map(np.testing.assert_array_equal,
                 serialization.to_state_dict(jax.tree.map(lambda x, k=k: x[k], states)),
                 serialization.to_state_dict(state_lib.create_state(config, (2,), key)))


@pytest.mark.slow
@pytest.mark.parametrize('seeds_mode', ['vmap', 'map', 'unroll', 'hybrid'])
def test_each_seed_of_a_run_of_seeds_is_the_single_run_of_its_seed(
    devices, tiny_config, train_iterations, assert_states_close, seeds_mode):
  # DCGAN nets with BatchNorm synchronised over two devices, in each seeds mode.
  config = tiny_config(seed=3, n_critic=2, warmup_gen_iters=0)
  (seeded, s_history), singles = _seeded_vs_single(train_iterations, config, devices[:2],
                                                   seeds_mode=seeds_mode)
  for k, (single, history) in enumerate(singles):
    assert_states_close(jax.tree.map(lambda x, k=k: x[k], seeded), single,
                         rtol=RTOL, atol=ATOL)
    for s_metrics, metrics in zip(s_history, history):
      for name, value in metrics.items():
        np.testing.assert_allclose(s_metrics[name][:, k], value, rtol=RTOL,
                                   atol=ATOL, err_msg=name)
  # The seeds are different runs.
  assert not np.allclose(jax.tree.leaves(singles[0][0].critic.params)[0],
                         jax.tree.leaves(singles[1][0].critic.params)[0])


@pytest.mark.slow
def test_a_run_of_seeds_writes_and_resumes_each_seed_as_a_single_run(tmp_path, tiny_config, assert_states_close):
  # WGAN-GP: each seed draws its own interpolates too.
  config = configs.get_config('gaussians8', 'wgan-gp')
  config.update({k: v for k, v in tiny_config('gaussians8').items()
                 if k not in {'loss', *configs.LOSS_DEFAULTS['wgan-gp']}})
  config.update(seed=5, num_seeds=2, num_gen_iters=2, checkpoint_every=1, n_critic=2)
  workdir = tmp_path / 'seeds'
  final = train.train(config, str(workdir))
  assert sorted(os.listdir(workdir)) == ['config.json', 'seed_5', 'seed_6']
  assert json.loads((workdir / 'config.json').read_text())['num_seeds'] == 2

  # Seed 6 alone, as a single run.
  single_dir = tmp_path / 'single'
  single = train.train(train.seed_config(config, 6), str(single_dir))
  seed_dir = workdir / 'seed_6'
  assert json.loads((seed_dir / 'config.json').read_text()) == \
      json.loads((single_dir / 'config.json').read_text())
  for name in ('samples', 'tensorboard', 'checkpoints', 'metrics.jsonl',
               'wasserstein.png'):
    assert (seed_dir / name).exists(), name
  assert sorted(os.listdir(seed_dir / 'samples')) == sorted(
      os.listdir(single_dir / 'samples'))
  ours = writers.read_metrics(str(seed_dir / 'metrics.jsonl'))
  theirs = writers.read_metrics(str(single_dir / 'metrics.jsonl'))
  assert [r['gen_iter'] for r in ours] == [1, 2]
  for a, b in zip(ours, theirs):
    assert a.keys() == b.keys()
    for name in a:
      np.testing.assert_allclose(a[name], b[name], rtol=RTOL, atol=ATOL, err_msg=name)
  assert_states_close(jax.tree.map(lambda x: x[1], final), single, RTOL, ATOL)
  samples, _ = generate.generate(str(seed_dir), 16)
  expected, _ = generate.generate(str(single_dir), 16)
  np.testing.assert_allclose(samples, expected, rtol=RTOL, atol=1e-5)

  # A crash while saving iteration 2 left it for seed 5 only: both seeds go on
  # from iteration 1 and end where the run ended.
  shutil.rmtree(seed_dir / 'checkpoints' / '2')
  resumed = train.train(config, str(workdir))
  jax.tree.map(np.testing.assert_array_equal, serialization.to_state_dict(resumed),
               serialization.to_state_dict(final))
  assert [r['gen_iter'] for r in writers.read_metrics(
      str(workdir / 'seed_5' / 'metrics.jsonl'))] == [1, 2]

  # One workdir holds either one run or a run of seeds.
  with pytest.raises(UserError, match='holds a run of 2 seeds: pass --num_seeds=2'):
    train.train(train.seed_config(config, 5), str(workdir))
  with pytest.raises(UserError, match='holds a single run'):
    train.train(config, str(single_dir))


@pytest.mark.parametrize('source_type', [parallel.DeviceResidentSource,
                                         parallel.HostSource])
def test_sources_give_each_seed_its_own_batches(devices, source_type):
  examples = np.arange(40 * 2, dtype=np.float32).reshape(40, 2)
  dataset = data_lib.Dataset('points', examples)

  def examples_of(source, first, n):
    data, batches = source.batches(first, n)
    batches = np.asarray(batches)
    return batches if data is None else examples[batches]

  seeded = examples_of(source_type(dataset, 8, [4, 9], devices[:2]), 3, 2)
  assert seeded.shape == (2, 2, 2, 4, 2)  # devices, n, seeds, batch / devices, point
  for k, seed in enumerate((4, 9)):
    alone = examples_of(source_type(dataset, 8, seed, devices[:2]), 3, 2)
    np.testing.assert_array_equal(seeded[:, :, k], alone)


@pytest.mark.parametrize('cores', [{0}, {0, 1}])
def test_seeds_mode_auto_and_unknown(tiny_config, monkeypatch, cores):
  monkeypatch.setattr(seeds_lib.os, 'sched_getaffinity', lambda pid: cores)
  assert jax.default_backend() == 'cpu'
  several = len(cores) > 1
  assert seeds_lib.resolve_mode('auto', tiny_config()) == ('processes' if several else 'unroll')
  # A narrow MLP leaves the cores idle: vmap fills them.
  assert seeds_lib.resolve_mode('auto', tiny_config('gaussians8')) == 'vmap'
  assert seeds_lib.resolve_mode('auto', configs.get_config('gaussians8')) == (
      'processes' if several else 'vmap')
  # Seeds in one process's step: what auto takes there.
  for mode in ('auto', 'processes'):
    assert seeds_lib.resolve_mode(mode, tiny_config(), one_process=True) == 'unroll'
    assert seeds_lib.resolve_mode(mode, configs.get_config('gaussians8'),
                                  one_process=True) == 'vmap'
  assert seeds_lib.resolve_mode('map') == 'map'
  with pytest.raises(UserError, match='seeds_mode'):
    train.validate(tiny_config(seeds_mode='pmap'))
