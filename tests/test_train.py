"""The training loop and the command line, on every embedded dataset."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from wgan_jax import train, writers
from wgan_jax.errors import UserError



# One image and one point set: the CLI path is the same for the other
# embedded sets, whose data the tests below check.
@pytest.mark.slow
@pytest.mark.parametrize('dataset', ['digits', 'gaussians8'])
def test_cli_run_writes_every_output(tmp_path, dataset):
  size = ['--image_size=16', '--ngf=8', '--ndf=8', '--nz=8', '--batch_size=8']
  if dataset != 'digits':
    size = ['--ngf=16', '--ndf=16', '--batch_size=16']
  result = _cli(f'--workdir={tmp_path}', f'--dataset={dataset}', '--num_gen_iters=4',
                '--sample_every=2', '--num_samples=16', '--n_critic=2',
                '--n_critic_warmup=3', '--warmup_gen_iters=1', '--lr_critic=1e-4',
                '--noprogress_bar', *size)
  assert result.returncode == 0, result.stderr

  records = writers.read_metrics(str(tmp_path / 'metrics.jsonl'))
  assert [r['gen_iter'] for r in records] == [1, 2, 3, 4]
  for r in records:
    assert set(r) >= {'wasserstein', 'critic_loss', 'generator_loss',
                      'critic_real', 'critic_fake'}
    assert r['wasserstein'] == pytest.approx(r['critic_real'] - r['critic_fake'],
                                             rel=1e-5, abs=1e-7)
  prefix = 'fake' if dataset == 'digits' else 'scatter'
  for it in (2, 4):
    with Image.open(tmp_path / 'samples' / f'{prefix}_{it:06d}.png') as im:
      assert im.size[0] > 30
  if dataset == 'digits':
    with Image.open(tmp_path / 'samples' / 'real.png') as im:
      # 16 samples of 16x16 in a grid of 8 columns with 2px padding, enlarged
      # 3x to be at least 320 pixels wide.
      assert im.size == (3 * (2 + 8 * 18), 3 * (2 + 2 * 18))
      assert im.mode == 'L'
  assert (tmp_path / 'wasserstein.png').stat().st_size > 1000
  assert any(f.startswith('events.out.tfevents')
             for f in os.listdir(tmp_path / 'tensorboard'))
  saved = json.loads((tmp_path / 'config.json').read_text())
  assert saved['dataset'] == dataset and saved['num_gen_iters'] == 4
  # Flags override the preset; the rest of the preset stays.
  assert saved['lr_critic'] == 1e-4 and saved['lr_gen'] == 5e-5
  assert saved['generator'] == ('dcgan' if dataset == 'digits' else 'mlp')


@pytest.mark.slow
def test_same_seed_same_run_and_another_seed_differs(tmp_path, tiny_config):
  runs = []
  for seed, name in ((0, 'a'), (0, 'b'), (1, 'c')):
    config = tiny_config('gaussians8', seed=seed)
    train.train(config, str(tmp_path / name))
    runs.append(writers.read_metrics(str(tmp_path / name / 'metrics.jsonl')))
  assert runs[0] == runs[1]
  assert runs[0] != runs[2]


@pytest.mark.parametrize('overrides, message', [
    (dict(dataset='digts'), "unknown dataset 'digts'. Did you mean digits?"),
    (dict(image_size=20), 'multiple of 16'),
    (dict(nz=0), '--nz=0: must be positive'),
    (dict(n_extra_layers=-1), 'must not be negative'),
    (dict(clip=-0.01), '--clip=-0.01: must be positive'),
    (dict(clip_when='during'), 'choose after or before'),
    (dict(optimizer='sgd'), 'choose rmsprop or adam'),
    (dict(compute_dtype='float16'), 'choose float32 or bfloat16'),
    (dict(batch_size=6), 'does not divide over 4 devices'),
    (dict(dataset='gaussians8', generator='dcgan'), '--generator=mlp'),
])
def test_bad_settings_are_user_errors(tmp_path, overrides, message, tiny_config):
  with pytest.raises(UserError, match=None) as info:
    train.train(tiny_config(**overrides), str(tmp_path))
  assert message in str(info.value)


def _cli(*args, env_extra=None, timeout=300):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', **(env_extra or {})}
  env.pop('XLA_FLAGS', None)
  env.update(env_extra or {})
  return subprocess.run([sys.executable, '-m', 'wgan_jax.train', *args],
                        capture_output=True, text=True, timeout=timeout, env=env)


TINY_FLAGS = ['--image_size=16', '--ngf=8', '--ndf=8', '--nz=8', '--batch_size=8',
              '--num_gen_iters=2', '--n_critic=1', '--n_critic_warmup=2',
              '--warmup_gen_iters=1', '--sample_every=1', '--num_samples=8',
              '--noprogress_bar']


def test_cli_takes_a_config_file(tmp_path):
  config_file = tmp_path / 'my_config.py'
  config_file.write_text(
      'from wgan_jax import configs\n'
      'def get_config():\n'
      '  c = configs.get_config("swissroll")\n'
      '  c.ngf = c.ndf = 12\n'
      '  return c\n')
  result = _cli(f'--workdir={tmp_path / "run"}', f'--config={config_file}',
                '--config.boost_every=0', '--num_gen_iters=2', '--n_critic_warmup=2',
                '--batch_size=16', '--noprogress_bar')
  assert result.returncode == 0, result.stderr
  saved = json.loads((tmp_path / 'run' / 'config.json').read_text())
  assert (saved['dataset'], saved['ngf'], saved['boost_every'],
          saved['num_gen_iters']) == ('swissroll', 12, 0, 2)


@pytest.mark.parametrize('args, env_extra, message', [
    (['--dataset=cifar'], None, "unknown dataset 'cifar'. Did you mean cifar10"),
    (['--dataset=folder:/no/such/folder'], None, 'folder:/no/such/folder: no such directory'),
    (['--image_size=24'], None, 'multiple of 16'),
    (['--batch_size=-4'], None, 'must be positive'),
    (['--batch_size=9'], {'XLA_FLAGS': '--xla_force_host_platform_device_count=2'},
     'does not divide over 2 devices'),
])
def test_cli_errors_are_one_line_with_exit_status_2(tmp_path, args, env_extra, message):
  result = _cli(f'--workdir={tmp_path}', *args, env_extra=env_extra)
  assert result.returncode == 2
  assert 'Traceback' not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and message in last


def test_cli_trains_on_a_folder_of_images_fed_from_the_host(tmp_path):
  images = tmp_path / 'images'
  rng = np.random.default_rng(0)
  for i in range(12):
    (images / str(i % 3)).mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
        images / str(i % 3) / f'{i}.png')
  (images / 'README').write_text('not an image')
  result = _cli(f'--workdir={tmp_path / "run"}', f'--dataset=folder:{images}',
                '--data_on_device=false', '--generator=mlp', '--critic=mlp', '--ngf=16',
                '--ndf=16', *TINY_FLAGS)
  assert result.returncode == 0, result.stderr
  assert 'Skipped 1 of 13 files' in result.stderr
  assert 'Feeding the 12 examples' in result.stderr
  assert len(writers.read_metrics(str(tmp_path / 'run' / 'metrics.jsonl'))) == 2
  with Image.open(tmp_path / 'run' / 'samples' / 'real.png') as im:
    assert im.mode == 'RGB'
  assert any(f.endswith('.npy') for f in os.listdir(images / '.wgan_jax_cache'))


def test_cli_refuses_an_unwritable_workdir(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  result = _cli(f'--workdir={blocker / "run"}', *TINY_FLAGS)
  assert result.returncode == 2
  assert 'Traceback' not in result.stderr
  assert 'cannot write to --workdir' in result.stderr.strip().splitlines()[-1]


def test_help_explains_every_reference_option():
  result = _cli('--help')  # absl exits with status 1 after printing help
  for name in ('image_size', 'batch_size', 'nz', 'ngf', 'ndf', 'generator', 'critic',
               'no_bn', 'n_extra_layers', 'lr_critic', 'lr_gen', 'optimizer', 'clip',
               'n_critic', 'num_gen_iters', 'seed', 'sample_every', 'config', 'workdir',
               'dataset', 'beta1', 'clip_when'):
    assert f'--{name}:' in result.stdout or f'--[no]{name}:' in result.stdout, name
  assert '(default: 0.01)' in result.stdout  # the clip's default is shown


def test_importing_train_defines_no_flags():
  code = ('import wgan_jax.train, absl.flags as f; '
          'assert "num_gen_iters" not in f.FLAGS, "flags defined on import"')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
