"""--seeds_mode=processes: each seed the single run of its seed, in a process of its own."""

import os
import signal

import jax
import numpy as np
import pytest

from wgan_jax import preemption, seed_processes, seeds, train, writers
from wgan_jax.errors import UserError


def test_up_to_one_process_a_core_each_gets_its_share():
  assert seed_processes.core_sets([0, 0], [0, 1, 2, 3]) == [{0, 1}, {2, 3}]
  assert seed_processes.core_sets([0, 0, 0], [0, 1, 2, 3]) == [{0}, {1}, {2, 3}]
  assert seed_processes.core_sets([7, 7], [0, 1]) == [{0}, {1}]


def test_more_processes_than_cores_put_those_behind_where_fewest_run():
  # 5 seeds on 2 cores: 3 on one, 2 on the other; the 2 furthest behind get
  # the core they share with one other.
  placed = seed_processes.core_sets([10, 4, 9, 3, 12], [0, 1])
  assert placed[1] == placed[3] == {1}
  assert placed[0] == placed[2] == placed[4] == {0}
  # Level seeds keep their places (no moves while they advance together).
  assert seed_processes.core_sets([5] * 5, [0, 1]) == [{1}, {1}, {0}, {0}, {0}]
  assert sorted(len([p for p in seed_processes.core_sets([0] * 7, [0, 1, 2])
                     if p == {c}]) for c in range(3)) == [2, 2, 3]


def test_processes_is_a_seeds_mode(tiny_config):
  assert seeds.resolve_mode('processes', tiny_config()) == 'processes'
  train.validate(tiny_config(seeds_mode='processes', num_seeds=2))


@pytest.mark.slow
def test_each_seed_process_is_the_single_run_and_stops_and_resumes(
    tmp_path, tiny_config, assert_states_close):
  # Long enough that the seeds are still training when the first grid comes.
  config = tiny_config(seed=3, num_seeds=2, num_gen_iters=300, sample_every=100,
                       warmup_gen_iters=0)
  in_one = train.train(config.copy_and_resolve_references(), str(tmp_path / 'unroll'))

  config.seeds_mode = 'processes'
  workdir = tmp_path / 'processes'
  shown = []

  def stop_at_first_grid(done, grid, curve):
    # The run's process takes SIGTERM and passes it on to the seeds.
    shown.append((done, grid, curve))
    os.kill(os.getpid(), signal.SIGTERM)

  with pytest.raises(preemption.Interrupted, match='resume with') as stopped:
    train.train(config, str(workdir), on_samples=stop_at_first_grid)
  assert stopped.value.exit_status == 0
  # gen_iter is the seed furthest behind; the other may still have been compiling.
  assert 0 <= stopped.value.gen_iter < 300
  saved = writers.read_metrics(str(workdir / 'seed_3' / 'metrics.jsonl'))
  assert 100 <= len(saved) < 300
  assert shown[0][0] == 100
  assert shown[0][1] == str(workdir / 'seed_3' / 'samples' / 'fake_000100.png')
  assert os.path.exists(shown[0][1]) and os.path.exists(shown[0][2])

  final = train.train(config, str(workdir))
  assert sorted(os.listdir(workdir)) == ['config.json', 'seed_3', 'seed_4']
  for k in range(2):
    assert_states_close(jax.tree.map(lambda x, k=k: x[k], final),
                        jax.tree.map(lambda x, k=k: x[k], in_one))
  for seed in (3, 4):
    records = writers.read_metrics(str(workdir / f'seed_{seed}' / 'metrics.jsonl'))
    assert [r['gen_iter'] for r in records] == list(range(1, 301))
    expected = writers.read_metrics(str(tmp_path / 'unroll' / f'seed_{seed}' / 'metrics.jsonl'))
    for a, b in zip(records, expected):
      np.testing.assert_allclose(a['wasserstein'], b['wasserstein'], rtol=1e-4, atol=1e-6)

  # The seeds' workdirs are those of a run of seeds in any mode: another resumes them.
  config.seeds_mode = 'unroll'
  config.num_gen_iters = 301
  train.train(config, str(workdir))
  assert [r['gen_iter'] for r in writers.read_metrics(
      str(workdir / 'seed_4' / 'metrics.jsonl'))][-2:] == [300, 301]


@pytest.mark.slow
def test_a_failing_seed_stops_the_run_with_its_one_line_error(tmp_path, tiny_config):
  config = tiny_config(seed=3, num_seeds=2, num_gen_iters=2, seeds_mode='processes')
  (tmp_path / 'seed_4').mkdir()
  (tmp_path / 'seed_4' / 'samples').write_text('not a directory')
  with pytest.raises(UserError, match=r'^seed 4: cannot write to --workdir=.*seed_4'):
    train.train(config, str(tmp_path))


def _after_each_start(monkeypatch, hook):
  """Calls ``hook(seed, started)`` as each seed's process starts; returns ``started``."""
  started = []

  class Hooked(seed_processes._Seed):  # pylint: disable=protected-access

    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      started.append(self)
      hook(self, started)

  monkeypatch.setattr(seed_processes, '_Seed', Hooked)
  return started


def test_a_stop_while_the_seeds_start_up_is_a_stop_not_a_crash(tmp_path, tiny_config,
                                                               monkeypatch):
  # SIGTERM reaches the seeds before they can take it (importing jax): they
  # end by it, which is a stop with nothing trained (a resume starts afresh).
  # Sent once: a second SIGTERM would end this process.
  _after_each_start(monkeypatch, lambda seed, started: len(started) == 1 and os.kill(
      os.getpid(), signal.SIGTERM))
  config = tiny_config(seed=3, num_seeds=2, num_gen_iters=2, seeds_mode='processes')
  with pytest.raises(preemption.Interrupted, match='the earliest 0 of 2.*resume with') as stopped:
    train.train(config, str(tmp_path))
  assert stopped.value.exit_status == 0 and stopped.value.gen_iter == 0


def test_a_seed_killed_from_outside_stops_the_run_with_one_line(tmp_path, tiny_config,
                                                                 monkeypatch):
  started = _after_each_start(monkeypatch, lambda seed, started: len(started) == 2 and os.kill(
      seed.process.pid, signal.SIGKILL))
  config = tiny_config(seed=3, num_seeds=2, num_gen_iters=400, seeds_mode='processes')
  with pytest.raises(UserError, match=r'^seed 4: its process was killed by SIGKILL \(as the '
                     r'out-of-memory killer does.*resume with: python -m wgan_jax.train'):
    train.train(config, str(tmp_path))
  assert started[0].outcome[0] == 'interrupted'  # the other seed was stopped, not failed
