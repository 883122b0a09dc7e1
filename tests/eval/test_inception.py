"""The FID Inception network and its weights, against a PyTorch port of pytorch-fid's.

The real weights are never downloaded: a state dict with pytorch-fid's names and
shapes is made of random numbers (``torch_fid_inception.randomize``).
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import traverse_util

from wgan_jax.eval import inception
from wgan_jax.errors import UserError

torch = pytest.importorskip('torch')

import torch.nn.functional as F  # noqa: E402  pylint: disable=wrong-import-position

from . import torch_fid_inception as tfi  # noqa: E402  pylint: disable=wrong-import-position

# pytorch-fid's pt_inception-2015-12-05-6726825d.pth is 95,628,359 bytes.
REAL_FILE_BYTES = 95_628_359


@pytest.fixture(scope='module')
def torch_model():
  return tfi.randomize(tfi.FIDInceptionV3(resize=False), seed=0)


@pytest.fixture(scope='module')
def state_dict(torch_model):
  return {k: v.numpy() for k, v in torch_model.state_dict().items()}


@pytest.fixture(scope='module')
def variables(state_dict):
  return traverse_util.unflatten_dict(inception.convert_state_dict(state_dict), sep='/')


@pytest.fixture(scope='module')
def pth_file(tmp_path_factory, torch_model):
  path = tmp_path_factory.mktemp('weights') / inception.PTH_NAME
  torch.save(torch_model.state_dict(), path)
  return str(path)


def test_every_pytorch_key_is_used_exactly_once(state_dict):
  shapes = inception.variable_shapes()
  keys = [inception.torch_key(path) for path in shapes]
  assert len(set(keys)) == len(keys) == len(shapes) == 470  # 94 convs + 94 BNs x 4
  ignored = {k for k in state_dict if k.endswith('.num_batches_tracked')}
  assert len(ignored) == 94
  assert set(keys) | ignored | set(inception.UNUSED_TORCH_KEYS) == set(state_dict)
  for path, key in zip(shapes, keys):
    torch_shape = state_dict[key].shape
    if path.endswith('/kernel'):  # OIHW -> HWIO
      torch_shape = tuple(torch_shape[i] for i in (2, 3, 1, 0))
    assert shapes[path] == torch_shape, key
  # The port's float32 tensors fill the real file but for its container's 0.1%.
  payload = sum(v.nbytes for v in state_dict.values())
  assert 0.998 * REAL_FILE_BYTES < payload < REAL_FILE_BYTES


def test_converter_places_each_tensor(state_dict, variables):
  w = state_dict['Mixed_7c.branch3x3dbl_3b.conv.weight']  # (384, 384, 3, 1)
  np.testing.assert_array_equal(
      variables['params']['Mixed_7c']['branch3x3dbl_3b']['conv']['kernel'],
      w.transpose(2, 3, 1, 0))
  bn = variables['batch_stats']['Mixed_6b']['branch7x7_2']['bn']
  np.testing.assert_array_equal(bn['mean'], state_dict['Mixed_6b.branch7x7_2.bn.running_mean'])
  np.testing.assert_array_equal(bn['var'], state_dict['Mixed_6b.branch7x7_2.bn.running_var'])
  np.testing.assert_array_equal(
      variables['params']['Conv2d_1a_3x3']['bn']['scale'],
      state_dict['Conv2d_1a_3x3.bn.weight'])


def test_block_intermediate_sizes_at_299():
  # The torchvision shapes: 35x35x288 after Mixed_5d, 17x17x768 after Mixed_6e,
  # 8x8x2048 after Mixed_7c (traced only, nothing computed).
  model = inception.FIDInceptionV3()
  shapes = jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x,
                                       capture_intermediates=True)[1],
      jax.ShapeDtypeStruct((1, 64, 64, 3), np.float32))
  inter = shapes['intermediates']
  assert inter['Mixed_5d']['__call__'][0].shape == (1, 35, 35, 288)
  assert inter['Mixed_6e']['__call__'][0].shape == (1, 17, 17, 768)
  assert inter['Mixed_7c']['__call__'][0].shape == (1, 8, 8, 2048)


def test_converted_weights_give_pytorch_fids_features(torch_model, variables):
  # Grayscale 24x24 images: tiled to RGB, resized to 299x299, then every
  # block; the same random weights in both give the same pool3 features.
  # (One full forward: compiling the network dominates, so one shape only.)
  x = np.random.default_rng(1).uniform(-1, 1, (2, 24, 24, 1)).astype(np.float32)
  apply = jax.jit(inception.FIDInceptionV3().apply)
  first = np.asarray(apply(variables, x))
  second = np.asarray(apply(variables, x))
  assert first.shape == (2, 2048) and np.all(np.isfinite(first))
  np.testing.assert_array_equal(first, second)
  torch_model.resize = True
  try:
    with torch.no_grad():
      rgb = torch.from_numpy(np.repeat(x, 3, axis=-1)).permute(0, 3, 1, 2)
      theirs = torch_model(rgb).numpy()
  finally:
    torch_model.resize = False
  assert np.abs(theirs).mean() > 0.05  # activations survived 94 random layers
  np.testing.assert_allclose(first, theirs, atol=1e-4 * np.abs(theirs).max())
  assert np.abs(first[0] - first[1]).max() > 1e-2  # the features see the input


@pytest.mark.parametrize('shape', [(13, 20), (401, 350), (299, 299)])
def test_resize_is_pytorch_bilinear_without_antialiasing(shape):
  x = np.random.default_rng(2).uniform(-1, 1, (2, *shape, 3)).astype(np.float32)
  ours = np.asarray(jax.jit(inception.resize_bilinear)(x))
  theirs = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(299, 299),
                         mode='bilinear', align_corners=False)
  np.testing.assert_allclose(ours, theirs.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_pth_converts_to_npz_through_the_command_line(tmp_path, pth_file, state_dict):
  out = tmp_path / 'converted.npz'
  result = subprocess.run(
      [sys.executable, '-m', 'wgan_jax.eval.inception', f'--pth={pth_file}',
       f'--out={out}', '--nocheck_hash'],
      capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  loaded = inception.load_weights(str(out))
  expected = inception.convert_state_dict(state_dict)
  flat = traverse_util.flatten_dict(loaded, sep='/')
  assert set(flat) == set(expected)
  for k, v in expected.items():
    np.testing.assert_array_equal(flat[k], v)


def test_missing_pth_on_the_command_line_exits_2(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'wgan_jax.eval.inception', f'--pth={tmp_path}/none.pth'],
      capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 2
  assert inception.PTH_URL in result.stderr and 'Traceback' not in result.stderr


def test_missing_weights_name_the_url_and_the_place(tmp_path, monkeypatch):
  monkeypatch.setenv('WGAN_JAX_CACHE', str(tmp_path / 'cache'))
  with pytest.raises(UserError) as e:
    inception.load_weights()
  message = str(e.value)
  assert inception.PTH_URL in message
  assert os.path.join(str(tmp_path / 'cache'), inception.PTH_NAME) in message
  with pytest.raises(UserError, match='no FID Inception weights'):
    inception.load_weights(str(tmp_path / 'elsewhere.npz'))


def test_default_place_converts_on_first_use_and_checks_the_hash(
    tmp_path, monkeypatch, pth_file):
  cache = tmp_path / 'cache'
  cache.mkdir()
  os.symlink(pth_file, cache / inception.PTH_NAME)
  monkeypatch.setenv('WGAN_JAX_CACHE', str(cache))
  # Random weights are not pytorch-fid's file: the SHA-256 check refuses them.
  with pytest.raises(UserError, match='SHA-256'):
    inception.load_weights()
  assert not (cache / inception.CONVERTED_NAME).exists()
  loaded = inception.load_weights(check_hash=False)
  assert (cache / inception.CONVERTED_NAME).exists()
  assert loaded['params']['Mixed_5b']['branch_pool']['conv']['kernel'].shape == (1, 1, 192, 32)


def _save(tmp_path, state_dict, name):
  path = tmp_path / name
  torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}, path)
  return str(path)


def test_wrong_weight_files_are_refused(tmp_path, state_dict):
  missing = dict(state_dict)
  del missing['Mixed_6c.branch7x7dbl_4.bn.running_var']
  with pytest.raises(UserError, match='Mixed_6c.branch7x7dbl_4.bn.running_var'):
    inception.read_torch_weights(_save(tmp_path, missing, 'a.pth'), check_hash=False)

  reshaped = dict(state_dict)
  reshaped['Mixed_7b.branch1x1.conv.weight'] = np.zeros((320, 1280, 3, 3), np.float32)
  with pytest.raises(UserError, match='shape'):
    inception.convert_state_dict(reshaped)

  torchvision_like = dict(state_dict, **{
      'AuxLogits.fc.weight': np.zeros((1000, 768), np.float32),
      'fc.weight': np.zeros((1000, 2048), np.float32)})
  with pytest.raises(UserError, match="torchvision's ImageNet"):
    inception.convert_state_dict(torchvision_like)

  extra = dict(state_dict, **{'Mixed_8a.conv.weight': np.zeros(3, np.float32)})
  with pytest.raises(UserError, match='Mixed_8a'):
    inception.convert_state_dict(extra)

  garbage = tmp_path / 'garbage.pth'
  garbage.write_bytes(b'not a pickle' * 100)
  with pytest.raises(UserError, match='cannot read'):
    inception.read_torch_weights(str(garbage), check_hash=False)
  with pytest.raises(UserError, match='SHA-256'):
    inception.read_torch_weights(str(garbage))


def test_wrong_converted_files_are_refused(tmp_path, state_dict):
  flat = inception.convert_state_dict(state_dict)
  incomplete = dict(flat)
  del incomplete['params/Mixed_5c/branch5x5_2/conv/kernel']
  path = str(tmp_path / 'incomplete.npz')
  inception.save_weights(path, incomplete)
  with pytest.raises(UserError, match='Mixed_5c/branch5x5_2'):
    inception.load_weights(path)

  foreign = str(tmp_path / 'foreign.npz')
  np.savez(foreign, **flat)  # no format marker: not written by save_weights
  with pytest.raises(UserError, match='convert it again'):
    inception.load_weights(foreign)

  garbage = tmp_path / 'garbage.npz'
  garbage.write_bytes(b'\x00' * 64)
  with pytest.raises(UserError, match='cannot read'):
    inception.load_weights(str(garbage))
