"""Checkpoints: exact resume, refused configs, NaN, damaged and half-written
checkpoints, SIGTERM/SIGINT, disk faults, generate."""

import errno
import glob
import json
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import serialization

from wgan_jax import (checkpoints, configs, data as data_lib, files, generate, parallel,
                      preemption, steps, train, writers)
from wgan_jax.errors import UserError
from wgan_jax.state import create_state, root_key


def _arrays(state):
  return jax.device_get(serialization.to_state_dict(state))


def assert_same_state(a, b):
  jax.tree.map(np.testing.assert_array_equal, _arrays(a), _arrays(b))


def _template(config):
  dataset = data_lib.get_dataset(config)
  init_key, noise_key = jax.random.split(root_key(config))
  state = create_state(config, dataset.data_shape, init_key, axis_name=parallel.AXIS)
  noise = jax.random.normal(noise_key, (config.num_samples, config.nz))
  return dataset.data_shape, state, noise


def _gen_iters(workdir):
  return [r['gen_iter'] for r in writers.read_metrics(os.path.join(workdir, 'metrics.jsonl'))]


# The 1st and the 8th generator iterations train the critic 160 times: more
# calls in flight than CPU collectives across processes can take unawaited.
CONFIG = dict(num_gen_iters=8, checkpoint_every=2, n_critic_warmup=160, boost_every=7)


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tiny_config):
  """A finished 8-iteration run on the ring of Gaussians; checkpoints at 4, 6, 8."""
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


def test_metrics_of_iterations_redone_after_a_crash_are_recorded_once(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  rows = [json.dumps({'gen_iter': i, 'wasserstein': 0.1 * i}) for i in range(1, 6)]
  path.write_text('\n'.join(rows) + '\n{"gen_iter": 6, "wass')  # torn by a kill
  writer = writers.MetricWriter(str(tmp_path), tensorboard=False, start=3)
  writer.write(4, {'wasserstein': 4.0})
  writer.close()
  records = writers.read_metrics(str(path))
  assert [r['gen_iter'] for r in records] == [1, 2, 3, 4]
  assert records[3]['wasserstein'] == 4.0


def test_a_checkpoint_holds_everything_a_run_needs(trained, template):
  config, workdir, final = trained
  data_shape, initial, noise = template
  ckpt = checkpoints.Checkpointer(workdir, config, data_shape)
  assert ckpt.steps() == [4, 6, 8]  # the newest 3 (keep_checkpoints)
  restored = ckpt.restore(initial, noise)
  assert restored.step == 8 and int(restored.state.gen_iter) == 8
  assert_same_state(restored.state, final)
  np.testing.assert_array_equal(restored.fixed_noise, noise)
  assert restored.data_position == steps.critic_steps_before(8, config)
  assert restored.config == json.loads(config.to_json())
  # The optimiser states are the trained ones, not fresh ones.
  assert any(np.abs(x).max() > 0 for x in jax.tree.leaves(restored.state.critic.opt_state))


def test_resuming_with_another_model_shape_is_refused(trained, template):
  config, workdir, _ = trained
  data_shape, initial, noise = template
  changed = config.copy_and_resolve_references()
  changed.update(ngf=32, nz=3, num_gen_iters=10, lr_gen=1e-4)
  with pytest.raises(UserError) as info:
    checkpoints.Checkpointer(workdir, changed, data_shape).restore(initial, noise)
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
  shape, other = configs.config_changes(saved, changed)
  assert shape == ["generator 'mlp' -> 'dcgan'", "rng_impl 'rbg' -> 'threefry2x32'"]
  assert other == ['lr_critic 5e-05 -> 1.0']


def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(trained, template,
                                                                     tmp_path):
  config, workdir, _ = _copy(trained, tmp_path)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '8', 'state'))
  data_shape, initial, noise = template
  restored = checkpoints.Checkpointer(workdir, config, data_shape).restore(initial, noise)
  assert restored.step == 6


def test_a_non_finite_loss_stops_training_and_keeps_the_last_checkpoint(
    trained, template, tmp_path):
  config, workdir, final = _copy(trained, tmp_path)
  # An absurd learning rate: the generator's weights overflow in iteration 9,
  # its samples in iteration 10 are NaN, and so is the critic's loss.
  config.update(lr_gen=1e38, num_gen_iters=20, checkpoint_every=0)
  with pytest.raises(checkpoints.NonFiniteError,
                     match=r'^critic_\w+ is nan at generator iteration 10: training '
                     r'stopped. The last checkpoint, iteration 8, is intact'):
    train.train(config, workdir)
  data_shape, initial, noise = template
  ckpt = checkpoints.Checkpointer(workdir, config, data_shape)
  assert ckpt.steps() == [4, 6, 8]
  assert_same_state(ckpt.restore(initial, noise).state, final)


def test_a_non_finite_state_is_never_saved(trained, template, tmp_path):
  config, workdir, final = _copy(trained, tmp_path)
  data_shape, _, noise = template
  ckpt = checkpoints.Checkpointer(workdir, config, data_shape)
  params = jax.tree.map(lambda x: x * np.inf, final.generator.params)
  broken = final.replace(generator=final.generator.replace(params=params))
  with pytest.raises(checkpoints.NonFiniteError,
                     match=r"non-finite values in \['generator'\]\['params'\].* after "
                     'generator iteration 9: training stopped. The last checkpoint, '
                     'iteration 8, is intact'):
    ckpt.save(9, broken, noise, 99)
  ckpt.close()
  assert ckpt.steps() == [4, 6, 8]


# orbax's failed writer leaves a callback for an event loop it has closed.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
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
      ckpt.save(9, final, noise, 99)
      ckpt.wait()
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    signal.signal(signal.SIGXFSZ, handler)
  assert str(info.value) == (
      f'could not write the checkpoint of iteration 9 to {ckpt.path} (File too '
      'large); the last complete checkpoint is iteration 8. Free some space or '
      'pass a --workdir you can write to, then run again.')
  ckpt.close()
  # The half-written checkpoint is not taken for one; a run resumes from 8.
  ckpt = checkpoints.Checkpointer(workdir, config, data_shape)
  assert ckpt.steps() == [4, 6, 8]
  assert ckpt.restore(initial, noise).step == 8


def test_a_checkpoint_folder_that_cannot_be_made_is_a_clear_error(trained, tmp_path):
  (tmp_path / 'checkpoints').write_text('a file in the way')
  with pytest.raises(UserError, match='cannot use .*checkpoints for checkpoints'):
    checkpoints.Checkpointer(str(tmp_path), trained[0], (2,))


def test_generate_is_reproducible_and_reads_any_checkpoint(trained, tmp_path):
  _, workdir, _ = trained
  a, restored = generate.generate(workdir, 20, seed=0)  # 2 batches of 16
  assert restored.step == 8 and a.shape == (20, 2) and np.all(np.isfinite(a))
  np.testing.assert_array_equal(generate.generate(workdir, 20, seed=0)[0], a)
  assert not np.array_equal(generate.generate(workdir, 20, seed=1)[0], a)
  early, restored = generate.generate(workdir, 20, seed=0, step=4)
  assert restored.step == 4 and not np.array_equal(early, a)
  path = str(tmp_path / 'points.npy')
  generate.write(path, a, restored)
  np.testing.assert_array_equal(np.load(path), a)
  generate.write(str(tmp_path / 'points.png'), a, restored)
  assert (tmp_path / 'points.png').stat().st_size > 1000
  with pytest.raises(UserError, match=r'there are \[4, 6, 8\]'):
    generate.generate(workdir, 10, step=3)
  with pytest.raises(UserError, match='name a .png or a .npy'):
    generate.write(str(tmp_path / 'points.txt'), a, restored)
  with pytest.raises(UserError, match='train first'):
    generate.generate(str(tmp_path / 'empty'), 10)


def test_generate_writes_an_image_grid(tmp_path, tiny_config):
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


def _cli_flags(tiny_config, workdir):
  """The command line of tiny_config('gaussians8', **CONFIG), saving every iteration."""
  config = tiny_config('gaussians8', **CONFIG)
  names = ('image_size', 'ngf', 'ndf', 'nz', 'batch_size', 'num_gen_iters', 'n_critic',
           'n_critic_warmup', 'warmup_gen_iters', 'boost_every', 'sample_every',
           'num_samples', 'log_every')
  return [f'--workdir={workdir}', '--dataset=gaussians8', '--noprogress_bar',
          '--checkpoint_every=1', '--keep_checkpoints=20',
          *(f'--{name}={config[name]}' for name in names)]


def _run_and_kill(args, env, log, kill_when, timeout=240):
  """Runs the training CLI; SIGKILLs it as soon as ``kill_when()`` holds.

  Returns the exit status (-9 if killed) and what it logged.
  """
  with open(log, 'w') as err:
    proc = subprocess.Popen([sys.executable, '-m', 'wgan_jax.train', *args],
                            stdout=subprocess.DEVNULL, stderr=err, env=env)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
      if kill_when():
        break
      time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)  # (no-op if it has finished)
    status = proc.wait(timeout=60)
  with open(log) as f:
    return status, f.read()


@pytest.mark.slow
def test_a_run_killed_at_any_moment_resumes_and_ends_as_an_uninterrupted_one(
    trained, template, tmp_path, tiny_config):
  config, whole_dir, whole = trained
  workdir = tmp_path / 'run'
  folder = workdir / 'checkpoints'

  def listing():
    names = os.listdir(folder) if folder.is_dir() else []
    done = sorted(int(n) for n in names if n.isdigit())
    return done, any('orbax-checkpoint-tmp' in n for n in names)

  def while_saving_after(k):  # a save in flight, after checkpoint k is complete
    return lambda: (lambda done, saving: saving and done and done[-1] >= k)(*listing())

  def right_after(k):  # as soon as a checkpoint newer than k is complete
    return lambda: (lambda done, _: done and done[-1] > k)(*listing())

  # Four simulated devices, as in this process, so that the programs and the
  # numbers are the same; a shared compilation cache saves recompiling.
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4',
         'JAX_COMPILATION_CACHE_DIR': str(tmp_path / 'jax_cache'),
         'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}
  args = _cli_flags(tiny_config, workdir)
  status, log = _run_and_kill(args, env, tmp_path / 'a.log', while_saving_after(2))
  assert status == -signal.SIGKILL, log
  first = listing()[0][-1]
  status, log = _run_and_kill(args, env, tmp_path / 'b.log', right_after(first))
  assert status == -signal.SIGKILL, log
  assert f'Resuming from the checkpoint of generator iteration {first} ' in log
  second = listing()[0][-1]
  status, log = _run_and_kill(args, env, tmp_path / 'c.log', lambda: False)
  assert status == 0, log
  assert f'Resuming from the checkpoint of generator iteration {second} ' in log
  assert 2 <= first < second < 8

  assert _gen_iters(workdir) == list(range(1, 9))  # each iteration once
  assert (writers.read_metrics(str(workdir / 'metrics.jsonl'))
          == writers.read_metrics(os.path.join(whole_dir, 'metrics.jsonl')))
  data_shape, initial, noise = template
  restored = checkpoints.Checkpointer(str(workdir), config, data_shape).restore(initial, noise)
  assert restored.step == 8
  assert_same_state(restored.state, whole)

  # Samples from the command line: those of the same call in this process.
  out = tmp_path / 'samples.npy'
  result = subprocess.run([sys.executable, '-m', 'wgan_jax.generate', f'--workdir={workdir}',
                           '--num=10', f'--out={out}', '--seed=5'],
                          env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == f'10 samples of generator iteration 8 written to {out}.'
  np.testing.assert_array_equal(np.load(out), generate.generate(str(workdir), 10, seed=5)[0])


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_as_one_and_share_the_checkpoints(trained, template, tmp_path, tiny_config):
  """Two processes of two CPU devices each = this process's four devices.

  Both resume from the one-process run's checkpoint of iteration 4 (written
  by one process, read by all), train to 6 and then, resumed, to 8; each feeds
  only its devices' slices of every global batch. To 6 the first process asks
  for the data on its devices and the second for the host: both feed from the
  host (one step program for all, else the collectives hang); to 8 both keep
  the data on their devices.
  """
  config, whole_dir, whole = trained
  workdir = tmp_path / 'run'
  shutil.copytree(os.path.join(whole_dir, 'checkpoints', '4'), workdir / 'checkpoints' / '4')
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}

  def run_two(until, on_device):
    args = [*_cli_flags(tiny_config, workdir), '--checkpoint_every=2', f'--num_gen_iters={until}',
            f'--coordinator_address=localhost:{_free_port()}', '--num_processes=2']
    procs = [subprocess.Popen([sys.executable, '-m', 'wgan_jax.train', *args,
                               f'--process_id={i}', f'--data_on_device={on_device[i]}'],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for i in (0, 1)]
    try:
      logs = [p.communicate(timeout=240)[1] for p in procs]
    finally:
      for p in procs:
        p.kill()
    for p, log in zip(procs, logs):
      assert p.returncode == 0, log
      assert 'Training on 4 cpu device(s)' in log
      assert f'Resuming from the checkpoint of generator iteration {until - 2} ' in log
    return logs

  logs = run_two(6, ('true', 'false'))
  assert all('from the host' in log and 'on each device' not in log for log in logs)
  assert ('Feeding from the host, as another process of this run does '
          '(--data_on_device=true here).') in logs[0]
  logs = run_two(8, ('true', 'true'))
  assert all('on each device' in log and 'from the host' not in log for log in logs)

  data_shape, initial, noise = template
  ckpt = checkpoints.Checkpointer(str(workdir), config, data_shape)
  assert ckpt.steps() == [4, 6, 8]
  # Written once: only process 0 wrote arrays (orbax keeps one folder per writer).
  written = os.listdir(workdir / 'checkpoints' / '8' / 'state')
  assert 'ocdbt.process_0' in written and 'ocdbt.process_1' not in written
  # The same numbers as one process, up to the order of the cross-device sums.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               _arrays(ckpt.restore(initial, noise).state), _arrays(whole))
  # The first process alone wrote the metrics, each iteration once.
  assert _gen_iters(workdir) == [5, 6, 7, 8]
  expected = writers.read_metrics(os.path.join(whole_dir, 'metrics.jsonl'))[4:]
  for got, want in zip(writers.read_metrics(str(workdir / 'metrics.jsonl')), expected):
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


# --- what long runs meet: a damaged or half-written checkpoint, SIGTERM and
# SIGINT, a disk that refuses a write. Each ends with one line, and the next
# run resumes.


def _damage(workdir, step):
  """Overwrites the largest file of a checkpoint's arrays with 100 random bytes."""
  files = glob.glob(os.path.join(workdir, 'checkpoints', str(step), 'state', '**'),
                    recursive=True)
  largest = max((f for f in files if os.path.isfile(f)), key=os.path.getsize)
  with open(largest, 'wb') as f:
    f.write(np.random.default_rng(0).bytes(100))


def _set_aside(workdir):
  return sorted(n for n in os.listdir(os.path.join(workdir, 'checkpoints'))
                if '.corrupt-' in n)


def _env(tmp_path):
  # Four simulated devices, as in this process (the same programs, the same
  # numbers); a shared compilation cache saves recompiling.
  return {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4',
          'JAX_COMPILATION_CACHE_DIR': str(tmp_path.parent / 'jax_cache'),
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}


def _train_cli(args, env, timeout=120):
  result = subprocess.run([sys.executable, '-m', 'wgan_jax.train', *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
  return result.returncode, result.stderr


def _not_info(log):
  """The lines of a log that are not absl INFO lines (warnings, errors, tracebacks)."""
  return [line for line in log.splitlines() if line and not line.startswith('I')]


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_run_finishes(
    trained, template, tmp_path, tiny_config):
  """The issue's reproduction, on the command line: no traceback (not even
  orbax's 'Event loop is closed'), one warning, status 0."""
  config, workdir, whole = _copy(trained, tmp_path)
  _damage(workdir, 8)
  status, log = _train_cli([*_cli_flags(tiny_config, workdir), '--checkpoint_every=2',
                            '--num_gen_iters=10'], _env(tmp_path))
  assert status == 0, log
  assert 'Traceback' not in log and 'Event loop is closed' not in log, log
  warnings = _not_info(log)
  assert len(warnings) == 1, log
  assert 'Checkpoint 8 in ' in warnings[0] and 'cannot be read' in warnings[0]
  assert 'moved aside to ' in warnings[0]
  assert 'Resuming from the checkpoint of generator iteration 6 ' in log
  [aside] = _set_aside(workdir)
  assert aside.startswith('8.corrupt-')  # kept, not deleted
  data_shape, initial, noise = template
  ckpt = checkpoints.Checkpointer(workdir, config, data_shape)
  assert ckpt.steps() == [4, 6, 8, 10]  # (--keep_checkpoints=20)
  # Iterations 7 and 8 redone give the state of before.
  assert_same_state(ckpt.restore_step(8, initial, noise).state, whole)
  assert _gen_iters(workdir) == list(range(1, 11))


def test_a_half_written_checkpoint_is_skipped_and_replaced(trained, template, tmp_path,
                                                           caplog):
  config, workdir, final = _copy(trained, tmp_path)
  os.remove(os.path.join(workdir, 'checkpoints', '8', 'commit_success.txt'))
  data_shape, initial, noise = template
  # Readers skip it and leave it where it is.
  with caplog.at_level(logging.WARNING):
    _, restored = generate.generate(workdir, 4, seed=0)
  assert restored.step == 6
  assert [r.getMessage() for r in caplog.records if 'incomplete' in r.getMessage()] == [
      f'Checkpoint 8 in {workdir}/checkpoints is incomplete (no commit marker); skipped.']
  assert not _set_aside(workdir)
  assert checkpoints.saved_config(workdir).num_gen_iters == config.num_gen_iters
  # A run moves it aside, resumes from 6 and saves 8 again.
  caplog.clear()
  ckpt = checkpoints.Checkpointer(workdir, config, data_shape)
  with caplog.at_level(logging.WARNING):
    restored = ckpt.restore(initial, noise)
  assert restored.step == 6
  [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert warning.startswith(f'Checkpoint 8 in {workdir}/checkpoints is incomplete (no '
                            'commit marker): moved aside to ')
  assert [n.split('.')[0] for n in _set_aside(workdir)] == ['8']
  ckpt.save(8, final, noise, 99)
  ckpt.close()
  ckpt = checkpoints.Checkpointer(workdir, config, data_shape)
  assert ckpt.steps() == [4, 6, 8]
  assert_same_state(ckpt.restore(initial, noise).state, final)


def test_evaluate_skips_an_unreadable_checkpoint(trained, tmp_path, caplog):
  from wgan_jax import evaluate
  _, workdir, _ = _copy(trained, tmp_path)
  _damage(workdir, 8)
  with caplog.at_level(logging.WARNING):
    records = evaluate.evaluate(workdir, which='all', num_samples=50, progress=False)
  assert [r['gen_iter'] for r in records] == [4, 6]
  assert any('Checkpoint 8 ' in r.getMessage() and 'cannot be read' in r.getMessage()
             and r.getMessage().endswith('skipped.') for r in caplog.records)
  assert [r['gen_iter'] for r in evaluate.evaluate(workdir, num_samples=50,
                                                   progress=False)] == [6]
  assert not _set_aside(workdir)  # a reader moves nothing


@pytest.mark.slow  # (two runs of a few iterations, each compiling)
@pytest.mark.parametrize('what', ['checkpoint', 'samples'])
def test_a_disk_that_fails_mid_run_stops_it_with_one_line(trained, template, tmp_path,
                                                          monkeypatch, what):
  config, workdir, whole = _copy(trained, tmp_path)
  config.update(num_gen_iters=12, checkpoint_every=2)
  full = os.strerror(errno.ENOSPC)
  if what == 'checkpoint':
    save = ocp.CheckpointManager.save

    def failing(self, step, *args, **kwargs):
      if step >= 10:
        raise OSError(errno.ENOSPC, full, os.path.join(str(self.directory), str(step)))
      return save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, 'save', failing)
    expected = (f'could not write the checkpoint of iteration 10 to {workdir}/checkpoints '
                f'({full}); the last complete checkpoint is iteration 8.')
  else:
    write_atomic = files.write_atomic
    path = os.path.join(workdir, 'samples', 'scatter_000010.png')

    def failing(name, write, text=False):
      if name == path:
        raise OSError(errno.ENOSPC, full, files.tmp_name(name))
      return write_atomic(name, write, text)

    monkeypatch.setattr(files, 'write_atomic', failing)
    expected = (f'could not write {files.tmp_name(path)} ({full}): training stopped; the '
                f'last complete checkpoint, iteration 8, is in {workdir}/checkpoints.')
  with pytest.raises(UserError) as info:
    train.train(config, workdir)
  message = str(info.value)
  assert message.startswith(expected) and '\n' not in message
  monkeypatch.undo()
  data_shape, initial, noise = template
  ckpt = checkpoints.Checkpointer(workdir, config, data_shape)
  assert ckpt.steps() == [4, 6, 8]
  assert_same_state(ckpt.restore(initial, noise).state, whole)
  ckpt.close()
  # The next run resumes from 8 and finishes.
  assert int(train.train(config, workdir).gen_iter) == 12
  assert _gen_iters(workdir) == list(range(1, 13))


def test_the_first_signal_asks_to_stop_and_the_second_ends_the_process():
  previous = {s: signal.getsignal(s) for s in preemption.StopRequests.SIGNALS}
  stop = preemption.StopRequests()
  try:
    assert not stop.stop_after(1, log_every=1)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)  # (Python runs the handler between bytecodes)
    assert stop.signum == signal.SIGTERM and stop.stop_after(2, log_every=1)
    # The next SIGTERM or SIGINT gets the default action: the end, at once.
    assert all(signal.getsignal(s) == signal.SIG_DFL for s in stop.SIGNALS)
  finally:
    stop.restore()
  assert {s: signal.getsignal(s) for s in stop.SIGNALS} == previous
  assert parallel.any_process(True) and not parallel.any_process(False)


def test_a_signal_in_process_raises_interrupted_with_the_iteration_saved(tmp_path, tiny_config):
  """What a caller of ``train.train`` gets (experiments/claims.py keeps its clock by it)."""
  config = tiny_config(num_gen_iters=6, sample_every=1, checkpoint_every=0)

  def on_samples(done, grid, curve):
    del grid, curve
    if done == 2:
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(0.01)  # (Python runs the handler between bytecodes)

  with pytest.raises(preemption.Interrupted) as caught:
    train.train(config, str(tmp_path), on_samples=on_samples)
  assert caught.value.exit_status == 0
  stopped = caught.value.gen_iter  # (it came while sampling 2: checked at the end of 3)
  assert stopped == 3 and f'after generator iteration {stopped} of 6' in str(caught.value)
  data_shape = data_lib.get_dataset(config).data_shape
  assert checkpoints.Checkpointer(str(tmp_path), config, data_shape).steps() == [stopped]


def _run_and_signal(args, env, log, signum, when, timeout=120):
  """Runs the training CLI and sends ``signum`` once ``when()`` holds."""
  with open(log, 'w') as err:
    proc = subprocess.Popen([sys.executable, '-m', 'wgan_jax.train', *args],
                            stdout=subprocess.DEVNULL, stderr=err, env=env)
    deadline = time.monotonic() + timeout
    seen = None
    while proc.poll() is None and time.monotonic() < deadline:
      seen = when()
      if seen:
        proc.send_signal(signum)
        break
      time.sleep(0.002)
    status = proc.wait(timeout=60)
  with open(log) as f:
    return status, f.read(), seen


@pytest.mark.slow
@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT], ids=['SIGTERM', 'SIGINT'])
def test_a_signal_saves_the_iteration_done_and_the_resumed_run_ends_as_a_whole_one(
    trained, template, tmp_path, signum, tiny_config):
  config, _, whole = trained
  workdir = tmp_path / 'run'
  metrics = workdir / 'metrics.jsonl'

  def started():  # iterations done (metrics written) once there are 2
    done = len(writers.read_metrics(str(metrics))) if metrics.exists() else 0
    return done if done >= 2 else None

  # A scatter plot each iteration: slow enough to be signalled mid-run. Only
  # the signal saves (no periodic checkpoints).
  args = [*_cli_flags(tiny_config, workdir), '--checkpoint_every=0', '--sample_every=1']
  env = _env(tmp_path)
  status, log, seen = _run_and_signal(args, env, tmp_path / 'a.log', signum, started)
  assert seen, log
  assert status == (0 if signum == signal.SIGTERM else 130), log
  assert 'Traceback' not in log
  name = signal.Signals(signum).name
  last = log.strip().splitlines()[-1]
  stopped = int(last.split('after generator iteration ')[1].split()[0])
  assert last == (f'Stopped by {name} after generator iteration {stopped} of 8, saved '
                  f'in {workdir}/checkpoints; resume with: python -m wgan_jax.train '
                  f'--workdir={workdir}')
  assert seen <= stopped < 8  # no finished iteration is lost
  data_shape, initial, noise = template
  assert checkpoints.Checkpointer(str(workdir), config, data_shape).steps() == [stopped]
  if signum == signal.SIGINT:
    return  # (resuming: as after SIGTERM)
  status, log = _train_cli([f'--workdir={workdir}', '--noprogress_bar'], env)
  assert status == 0, log
  assert f'Resuming from the checkpoint of generator iteration {stopped} ' in log
  assert _gen_iters(workdir) == list(range(1, 9))
  restored = checkpoints.Checkpointer(str(workdir), config, data_shape).restore(
      initial, noise)
  assert restored.step == 8
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               _arrays(restored.state), _arrays(whole))


@pytest.mark.slow
def test_two_processes_stop_at_the_same_iteration_when_one_is_signalled(trained, tmp_path, tiny_config):
  """SIGTERM to the second process only: both stop after the same generator
  iteration (they ask each other at every logged one) and save it."""
  config, whole_dir, _ = trained
  workdir = tmp_path / 'run'
  shutil.copytree(os.path.join(whole_dir, 'checkpoints', '4'), workdir / 'checkpoints' / '4')
  metrics = workdir / 'metrics.jsonl'
  args = [*_cli_flags(tiny_config, workdir), '--checkpoint_every=0', '--sample_every=1',
          f'--coordinator_address=localhost:{_free_port()}', '--num_processes=2']
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  logs = [open(tmp_path / f'{i}.log', 'w') for i in range(2)]  # pylint: disable=consider-using-with
  procs = [subprocess.Popen([sys.executable, '-m', 'wgan_jax.train', *args,
                             f'--process_id={i}'], env=env, stdout=subprocess.DEVNULL,
                            stderr=logs[i]) for i in range(2)]
  try:
    deadline = time.monotonic() + 240
    while procs[1].poll() is None and time.monotonic() < deadline:
      if metrics.exists() and len(writers.read_metrics(str(metrics))) >= 2:
        procs[1].send_signal(signal.SIGTERM)
        break
      time.sleep(0.002)
    statuses = [p.wait(timeout=120) for p in procs]
  finally:
    for p, log in zip(procs, logs):
      p.kill()
      log.close()
  logs = [(tmp_path / f'{i}.log').read_text() for i in range(2)]
  assert statuses == [0, 0], logs
  last = [log.strip().splitlines()[-1] for log in logs]
  stopped = {int(line.split('after generator iteration ')[1].split()[0]) for line in last}
  assert len(stopped) == 1, last
  [stopped] = stopped
  assert last[0].startswith('Stopped by a signal to another process after generator iteration')
  assert last[1].startswith('Stopped by SIGTERM after generator iteration')
  assert 5 <= stopped < 8
  assert sorted(int(n) for n in os.listdir(workdir / 'checkpoints')) == [4, stopped]
  assert _gen_iters(workdir) == list(range(5, stopped + 1))
