"""Importing the reference's checkpoints: the .pth reader, the converter, refusals."""

import os
import pickle
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest

from wgan_jax import configs, models, state as state_lib
from wgan_jax.errors import UserError
from wgan_jax.reference import importer, pth

torch = pytest.importorskip('torch')

from wgan_jax.reference import parity  # noqa: E402  pylint: disable=wrong-import-position
from wgan_jax.reference import torch_model as ref  # noqa: E402  pylint: disable=wrong-import-position

# ---------------------------------------------------------------------------
# Reading .pth files.


@pytest.mark.parametrize('zip_format', [True, False], ids=['zip', 'legacy'])
def test_reader_equals_torch_load(tmp_path, zip_format):
  net = ref.DCGAN_G(32, 10, 3, 8, 1)
  net.apply(ref.weights_init)
  t = torch.arange(24.0).reshape(4, 6)
  tensors = {**net.state_dict(), 'transposed': t.t(), 'window': t[1:3, 2:],
             'double': torch.ones(3, dtype=torch.float64),
             'half': torch.full((2,), 0.5, dtype=torch.float16)}
  path = tmp_path / 'net.pth'
  torch.save(tensors, path, _use_new_zipfile_serialization=zip_format)
  arrays = pth.load_state_dict(path)
  assert list(arrays) == list(tensors)  # order kept
  for name, tensor in tensors.items():
    assert arrays[name].dtype == tensor.numpy().dtype, name
    np.testing.assert_array_equal(arrays[name], tensor.numpy(), err_msg=name)


def test_reader_drops_the_data_parallel_prefix(tmp_path):
  path = tmp_path / 'dp.pth'
  torch.save(torch.nn.DataParallel(ref.MLP_D(16, 4, 1, 8)).state_dict(), path)
  assert list(pth.load_state_dict(path))[0] == 'main.0.weight'


@pytest.mark.parametrize('zip_format', [True, False], ids=['zip', 'legacy'])
def test_reader_refuses_whole_modules_without_running_them(tmp_path, zip_format):
  path = tmp_path / 'model.pth'
  torch.save(ref.DCGAN_D(16, 4, 1, 8), path, _use_new_zipfile_serialization=zip_format)
  with pytest.raises(UserError, match=r'holds a pickled .*DCGAN_D, not a state_dict; '
                     r'save it with torch.save\(net.state_dict\(\)'):
    pth.load_state_dict(path)


class _Evil:
  def __reduce__(self):
    return (os.system, ('touch pwned',))


@pytest.mark.parametrize('where', ['zip', 'plain'])
def test_reader_never_runs_pickled_code(tmp_path, monkeypatch, where):
  monkeypatch.chdir(tmp_path)
  payload = pickle.dumps(_Evil(), protocol=2)
  path = tmp_path / 'evil.pth'
  if where == 'zip':
    with zipfile.ZipFile(path, 'w') as archive:
      archive.writestr('archive/data.pkl', payload)
  else:
    path.write_bytes(payload)
  with pytest.raises(UserError):
    pth.load_state_dict(path)
  assert not (tmp_path / 'pwned').exists()


def _without_storage(path):
  """A torch.save zip archive that lost one tensor's data."""
  torch.save({'w': torch.ones(2), 'b': torch.zeros(2)}, path)
  with zipfile.ZipFile(path) as archive:
    members = {n: archive.read(n) for n in archive.namelist()}
  with zipfile.ZipFile(path, 'w') as archive:
    for name, data in members.items():
      if not name.endswith('data/0'):
        archive.writestr(name, data)


@pytest.mark.parametrize('content, message', [
    (lambda p: torch.save({'epoch': 3, 'netG': {'w': torch.ones(2)}}, p),
     r"holds a dict with keys 'epoch', 'netG', not a state_dict"),
    (lambda p: torch.save(torch.ones(3), p), 'holds a single tensor, not a state_dict'),
    (lambda p: torch.save({}, p), 'holds an empty state_dict'),
    (lambda p: p.write_text('hello\n' * 50), 'is not a PyTorch file'),
    (lambda p: np.save(open(p, 'wb'), np.ones(3)), 'is not a PyTorch file'),
    (lambda p: p.write_bytes(b'PK\x03\x04' + b'\0' * 40), 'is not a PyTorch file'),
    (lambda p: _without_storage(p), 'damaged or not a PyTorch file'),
], ids=['nested', 'tensor', 'empty', 'text', 'numpy', 'zip-header', 'lost-storage'])
def test_reader_refuses_what_is_not_a_state_dict(tmp_path, content, message):
  path = tmp_path / 'x.pth'
  content(path)
  with pytest.raises(UserError, match=message):
    pth.load_state_dict(path)


def test_reader_refuses_a_missing_file(tmp_path):
  with pytest.raises(UserError, match='no such file'):
    pth.load_state_dict(tmp_path / 'netG_epoch_24.pth')


# ---------------------------------------------------------------------------
# Converting: the architecture read off the files, and equal outputs after.

CASES = {
    'dcgan16': dict(image_size=16, channels=1),
    'dcgan32-extra': dict(image_size=32, n_extra_layers=1),
    'dcgan64': dict(image_size=64, ngf=4, ndf=4),
    'dcgan32-nobn': dict(image_size=32, no_bn=True, critic_bn=False),
    'mlp16-rgb': dict(image_size=16, generator='mlp', critic='mlp', ngf=16, ndf=16),
    'mlp32-grey': dict(image_size=32, channels=1, generator='mlp', critic='mlp',
                       ngf=16, ndf=16),
    'mlp-points': dict(dataset='gaussians8', generator='mlp', critic='mlp', nz=2,
                       ngf=16, ndf=16),
}
ARCH_FIELDS = ('generator', 'critic', 'nz', 'ngf', 'ndf', 'image_size', 'channels',
               'n_extra_layers', 'no_bn', 'critic_bn')


def _save_pair(tmp_path, config, seed=0):
  data_shape = parity.data_shape_of(config)
  net_g, net_d = parity.torch_models(config, data_shape, seed)
  paths = tmp_path / 'netG_epoch_3.pth', tmp_path / 'netD_epoch_3.pth'
  torch.save(net_g.state_dict(), paths[0])
  torch.save(net_d.state_dict(), paths[1])
  return net_g, net_d, paths


@pytest.mark.parametrize('case', list(CASES))
def test_import_infers_the_architecture_and_computes_what_torch_computes(tmp_path, case):
  config = parity.make_config(**CASES[case])
  net_g, net_d, (g_path, d_path) = _save_pair(tmp_path, config)
  # A user gives only the files: the rest of the config is the default's.
  base = configs.get_config(config.dataset)
  inferred = importer.config_from_reference(g_path, d_path, base)
  for field in ARCH_FIELDS:
    if field in ('image_size', 'channels') and config.dataset == 'gaussians8':
      continue  # points: the data shape is not in the config
    if field == 'n_extra_layers' and config.generator == 'mlp':
      continue
    assert inferred[field] == config[field], field
  assert base.image_size == configs.get_config(config.dataset).image_size  # untouched

  state = importer.state_from_reference(g_path, d_path, inferred,
                                            state_lib.root_key(inferred))
  data_shape = parity.data_shape_of(config)
  assert importer.reference_data_shape(inferred, g_path, d_path) == data_shape
  rng = np.random.default_rng(0)
  z = rng.standard_normal((4, config.nz)).astype(np.float32)
  x = rng.uniform(-1, 1, (4, *data_shape)).astype(np.float32)
  fake, _ = state.generator.apply_fn(state.generator.variables, z, train=True,
                                     mutable=['batch_stats'])
  score, _ = state.critic.apply_fn(state.critic.variables, x, train=True,
                                   mutable=['batch_stats'])
  with torch.no_grad():
    t_fake = parity.from_torch(net_g(torch.from_numpy(z)), data_shape)
    t_score = net_d(parity.to_torch(x)).numpy()
  assert parity.deviation(fake, t_fake) < 1e-5
  assert parity.deviation(-np.asarray(score), t_score) < 1e-5


def test_imported_state_is_a_fresh_run_with_the_files_weights(tmp_path):
  config = parity.make_config()
  _, _, (g_path, d_path) = _save_pair(tmp_path, config)
  key = state_lib.root_key(config)
  fresh = state_lib.create_state(config, (16, 16, 3), key)
  imported = importer.state_from_reference(g_path, d_path, config, key)
  for net in ('generator', 'critic'):
    ours, theirs = getattr(imported, net), getattr(fresh, net)
    for part in ('params', 'batch_stats', 'opt_state'):
      a, b = getattr(ours, part), getattr(theirs, part)
      assert jax.tree.structure(a) == jax.tree.structure(b), (net, part)
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.shape == y.shape and x.dtype == y.dtype, (net, part)
    # Fresh optimiser state: RMSProp's square averages start at zero.
    assert all(not np.any(leaf) for leaf in jax.tree.leaves(ours.opt_state))
    assert ours.step == 0
    # The file's weights, not the fresh ones (BatchNorm biases are 0 in both).
    assert not any(np.array_equal(x, y) and np.any(x) for x, y in zip(
        jax.tree.leaves(ours.params), jax.tree.leaves(theirs.params)))
  np.testing.assert_array_equal(imported.rng, fresh.rng)
  assert int(imported.gen_iter) == 0


def test_only_a_generator_keeps_a_freshly_initialised_critic(tmp_path):
  config = parity.make_config(**CASES['mlp16-rgb'])
  _, _, (g_path, _) = _save_pair(tmp_path, config)
  key = state_lib.root_key(config)
  fresh = state_lib.create_state(config, (16, 16, 3), key)
  imported = importer.state_from_reference(g_path, None, config, key)
  for x, y in zip(jax.tree.leaves(imported.critic.params),
                  jax.tree.leaves(fresh.critic.params)):
    np.testing.assert_array_equal(x, y)
  with pytest.raises(UserError, match='nothing to import'):
    importer.state_from_reference(None, None, config, key)


def test_critic_sign_is_the_last_layer_only():
  config = parity.make_config(n_extra_layers=1)
  _, net_d = parity.torch_models(config, (16, 16, 3))
  sd = parity.state_dict(net_d)
  ours = importer.critic_variables(sd, config)['params']
  theirs = importer.critic_variables(sd, config, negate_last=False)['params']
  for module in ours:
    sign = -1 if module == 'final_conv' else 1
    for leaf in ours[module]:
      np.testing.assert_array_equal(ours[module][leaf], sign * theirs[module][leaf])


def test_converted_trees_are_the_modules_own():
  for case in ('dcgan32-extra', 'dcgan32-nobn', 'mlp16-rgb'):
    config = parity.make_config(**CASES[case])
    data_shape = parity.data_shape_of(config)
    net_g, net_d = parity.torch_models(config, data_shape)
    for module, convert, net, x in (
        (models.make_generator(config, data_shape), importer.generator_variables,
         net_g, np.zeros((2, config.nz), np.float32)),
        (models.make_critic(config, data_shape), importer.critic_variables,
         net_d, np.zeros((2, *data_shape), np.float32))):
      own = jax.eval_shape(lambda x, m=module: m.init(jax.random.key(0), x), x)
      converted = convert(parity.state_dict(net), config, data_shape)
      own = {'params': own['params'], 'batch_stats': own.get('batch_stats', {})}
      assert jax.tree.structure(converted) == jax.tree.structure(own), case
      for a, b in zip(jax.tree.leaves(converted), jax.tree.leaves(own)):
        assert a.shape == b.shape, case


def test_half_precision_checkpoints_import(tmp_path):
  config = parity.make_config()
  net_g, _ = parity.torch_models(config, (16, 16, 3))
  path = tmp_path / 'netG_half.pth'
  torch.save(net_g.half().state_dict(), path)
  variables = importer.generator_variables(path, config)
  kernel = variables['params']['initial_convt']['kernel']
  assert kernel.dtype == np.float32
  np.testing.assert_array_equal(
      kernel, net_g.state_dict()['main.initial:8-16:convt.weight'].float().numpy()
      .transpose(2, 3, 0, 1))


# ---------------------------------------------------------------------------
# Files that do not fit.


def test_refuses_another_size_saying_what_was_expected(tmp_path):
  config = parity.make_config(image_size=32)
  _, _, (g_path, _) = _save_pair(tmp_path, config)
  config.image_size = 64
  with pytest.raises(UserError) as e:
    importer.generator_variables(g_path, config)
  message = str(e.value)
  assert 'netG_epoch_3.pth does not fit the DCGAN generator of this config (64px' in message
  assert 'it holds a DCGAN generator (netG) for 32px, 3 channel(s), nz=8, ngf=8' in message
  assert 'config_from_reference' in message


def test_refuses_another_architecture(tmp_path):
  mlp = parity.make_config(generator='mlp', critic='mlp', ngf=16, ndf=16)
  _, _, (g_path, d_path) = _save_pair(tmp_path, mlp)
  dcgan = parity.make_config()
  with pytest.raises(UserError, match=r'does not fit the DCGAN generator .* it holds '
                     r'an MLP generator \(netG\) for 16px, 3 channel\(s\), nz=8, ngf=16'):
    importer.generator_variables(g_path, dcgan)
  with pytest.raises(UserError, match=r'does not fit the DCGAN critic'):
    importer.state_from_reference(None, d_path, dcgan, state_lib.root_key(dcgan))
  # Another width of the same kind.
  mlp.ngf = 32
  with pytest.raises(UserError, match=r'this config \(16px, 3 channel\(s\), nz=8, ngf=32\): '
                     r'it holds an MLP generator \(netG\) .* ngf=16'):
    importer.generator_variables(g_path, mlp)


def test_damaged_file_of_the_right_architecture_names_its_keys():
  config = parity.make_config()
  net_g, _ = parity.torch_models(config, (16, 16, 3))
  tensors = parity.state_dict(net_g)
  del tensors['main.pyramid:8:batchnorm.running_var']
  tensors['main.initial:16:batchnorm.bias'] = tensors['main.initial:16:batchnorm.bias'][:5]
  with pytest.raises(UserError, match=r'it lacks main.pyramid:8:batchnorm.running_var; '
                     r'has wrong shapes: main.initial:16:batchnorm.bias \(5,\) '
                     r'\(expected \(16,\)\)'):
    importer.generator_variables(tensors, config, (16, 16, 3))


def test_refuses_swapped_and_mismatched_files(tmp_path):
  config = parity.make_config()
  _, _, (g_path, d_path) = _save_pair(tmp_path, config)
  with pytest.raises(UserError, match=r'netD_epoch_3.pth holds a DCGAN critic \(netD\) '
                     r'.*not a generator; pass it as the critic file'):
    importer.config_from_reference(d_path, g_path)
  with pytest.raises(UserError, match=r'does not fit the DCGAN generator .* it holds a '
                     r'DCGAN critic \(netD\)'):
    importer.generator_variables(d_path, config)
  big = tmp_path / 'big'
  big.mkdir()
  _, _, (_, d32) = _save_pair(big, parity.make_config(image_size=32))
  with pytest.raises(UserError, match='the two nets do not fit the same data'):
    importer.config_from_reference(g_path, d32)
  extra = tmp_path / 'extra'
  extra.mkdir()
  _, _, (_, d_extra) = _save_pair(extra, parity.make_config(n_extra_layers=1))
  with pytest.raises(UserError, match='same n_extra_layers'):
    importer.config_from_reference(g_path, d_extra)
  with pytest.raises(UserError, match='holds a pickled'):
    torch.save(ref.DCGAN_G(16, 8, 3, 8), tmp_path / 'module.pth')
    importer.state_from_reference(tmp_path / 'module.pth', None, config,
                                      state_lib.root_key(config))


def test_mlp_of_unusual_channels_needs_them_given(tmp_path):
  config = parity.make_config(image_size=16, channels=2, generator='mlp', critic='mlp',
                              ngf=16, ndf=16)
  _, _, (g_path, _) = _save_pair(tmp_path, config)
  with pytest.raises(UserError, match='pass --image_size and --channels'):
    importer.config_from_reference(g_path, None, configs.get_config())
  given = configs.get_config()
  given.update(channels=2, image_size=16)
  inferred = importer.config_from_reference(g_path, None, given)
  assert importer.reference_data_shape(inferred, g_path) == (16, 16, 2)
  assert (inferred.generator, inferred.nz, inferred.ngf) == ('mlp', 8, 16)
  variables = importer.generator_variables(g_path, inferred)
  assert variables['params']['out']['kernel'].shape == (16, 16 * 16 * 2)


# ---------------------------------------------------------------------------
# The command line: import into a workdir, generate from it, train on.


@pytest.mark.slow
def test_imported_workdir_generates_the_reference_samples_and_trains_on(tmp_path):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from wgan_jax import checkpoints, cli, generate, train  # pylint: disable=g-import-not-at-top
  config = parity.make_config(channels=1)
  net_g, _, (g_path, d_path) = _save_pair(tmp_path, config)
  workdir = tmp_path / 'run'
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  env.pop('XLA_FLAGS', None)
  result = subprocess.run(
      [sys.executable, '-m', 'wgan_jax.reference.importer', f'--netG={g_path}',
       f'--netD={d_path}', f'--workdir={workdir}', '--dataset=digits'],
      capture_output=True, text=True, env=env, timeout=300)
  assert result.returncode == 0, result.stderr
  assert 'python -m wgan_jax.generate' in result.stdout
  with pytest.raises(UserError, match='already holds checkpoints'):
    importer.import_into_workdir(g_path, None, config, str(workdir))

  # Samples from the workdir are the reference generator's for the same z.
  samples, restored = generate.generate(str(workdir), num=config.batch_size, seed=3)
  assert restored.step == 0 and restored.data_shape == (16, 16, 1)
  # (One batch of the run's batch size, BatchNorm on its statistics.)
  batch = restored.config.batch_size
  z = np.array(jax.random.normal(jax.random.key(3, impl=restored.config.rng_impl),
                                 (batch, config.nz)))
  with torch.no_grad():
    expected = parity.from_torch(net_g(torch.from_numpy(z)), (16, 16, 1))
  expected = expected[:config.batch_size]
  assert parity.deviation(samples, expected) < 1e-5

  # Training on needs no architecture flags: the saved options are the base.
  saved = checkpoints.saved_config(str(workdir))
  assert (saved.ngf, saved.nz, saved.channels, saved.dataset) == (8, 8, 1, 'digits')
  flag_values = flags.FlagValues()
  cli.define_config_flags(flag_values)
  flag_values(['train', '--num_gen_iters=1', '--n_critic_warmup=2',
               '--progress_bar=false'])
  config = cli.build_config(flag_values, base=saved)
  assert (config.ngf, config.num_gen_iters) == (8, 1)
  train.train(config, str(workdir))
  assert checkpoints.Checkpointer(str(workdir)).steps() == [0, 1]
