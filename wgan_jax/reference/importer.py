"""Importing the reference PyTorch WGAN's checkpoints (no torch needed):
``python -m wgan_jax.reference.importer --netG=... --netD=... --workdir=DIR``.

The reference code saves ``netG.state_dict()`` and ``netD.state_dict()`` with
``torch.save`` every epoch (``netG_epoch_N.pth``, ``netD_epoch_N.pth``). ``pth``
reads those files (both of torch's formats: the zip archive of torch
>= 1.6 and the older pickle stream) into numpy arrays without torch and
without running any pickled code, ``layouts`` identifies them, and this module converts them to wgan_jax variables:

* DCGAN_G / DCGAN_G_nobn / DCGAN_D (any size, extra layers) and MLP_G / MLP_D,
  keyed by the reference's module names (``main.initial:100-512:convt.weight``,
  ``main.pyramid:512:batchnorm.running_mean``, ``main.0.weight``, ...);
* layouts: ConvTranspose2d (in, out, kh, kw) -> (kh, kw, in, out) (our kernel
  keeps PyTorch's tap order, so no flip); Conv2d (out, in, kh, kw) -> HWIO;
  Linear (out, in) -> (in, out), with the MLPs' image side reordered from
  NCHW to NHWC flattening; BatchNorm weight/bias/running_mean/running_var ->
  scale/bias/mean/var;
* the critic's sign: the reference's critic minimises f(real) - f(fake), ours
  (the paper's) maximises it. The two are the same network up to the sign of
  the critic's last layer, so its weight (and, for MLP_D, its bias) is
  negated. Clipping (symmetric), RMSProp (elementwise, even in the gradient)
  and the initialisation (symmetric) commute with that negation, so training
  from an imported state follows the reference's trajectory exactly, with
  ``critic_loss`` = the reference's Loss_D and ``generator_loss`` = its
  Loss_G (``tests/reference/test_parity.py`` checks this step by step).

``config_from_reference`` infers the architecture (image size, channels, nz,
ngf/ndf, extra layers, BatchNorm, MLP) from the files, and
``state_from_reference`` builds a ``WGANState`` from them with fresh optimiser
state (the reference saves none) and ``gen_iter`` 0 (the reference, given
``--netG``/``--netD``, also starts its schedule again).
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from wgan_jax.errors import UserError
from wgan_jax.reference.layouts import (Architecture, critic_layout, generator_layout,
                                        identify, to_flax)
from wgan_jax.reference.pth import load_state_dict
from wgan_jax.state import WGANState, create_state, initial_randomness



def _default_config():
  from wgan_jax import configs  # pylint: disable=g-import-not-at-top
  return configs.get_config()


def _identify_quietly(state_dict, config) -> Architecture | None:
  try:
    return identify(state_dict, config.channels, config.image_size)
  except UserError:
    return None


def reference_data_shape(config, *sources) -> tuple[int, ...]:
  """The shape of one example for ``config`` and the reference files
  ``sources`` (state_dicts or .pth paths): (2,) for an MLP on points in the
  plane, else (image_size, image_size, channels), with the files' channels
  where ``config.channels`` is 0. Compare it with the dataset's shape."""
  state_dicts = [_as_state_dict(s, 'state_dict')[0] for s in sources]
  found = [a for a in (_identify_quietly(sd, config) for sd in state_dicts)
           if a is not None and a.data_shape is not None]
  for arch in found:
    if len(arch.data_shape) == 1:
      return arch.data_shape
  channels = config.channels or next(
      (a.data_shape[-1] for a in found), 0)
  if not channels:
    raise UserError('cannot tell the number of image channels from the files; '
                    'pass --channels.')
  return (config.image_size, config.image_size, channels)


def _agrees(arch: Architecture, config, data_shape, role: str) -> bool:
  """Whether ``arch`` is the architecture the config asks for."""
  kind = config.generator if role == 'generator' else config.critic
  return (arch.role, arch.kind) == (role, kind) and arch.data_shape in (
      None, tuple(data_shape)) and all(
          config[k] == v for k, v in arch.fields.items())


def _convert(state_dict, config, data_shape, role: str, what: str,
             negate: bool = True) -> dict:
  layout = generator_layout if role == 'generator' else critic_layout
  entries = layout(config, data_shape)
  missing = [e.key for e in entries if e.key not in state_dict]
  known = {e.key for e in entries}
  extra = [k for k in state_dict
           if k not in known and not k.endswith('num_batches_tracked')]
  wrong = [f'{e.key} {tuple(state_dict[e.key].shape)} (expected {e.shape})'
           for e in entries
           if e.key in state_dict and tuple(state_dict[e.key].shape) != e.shape]
  if missing or extra or wrong:
    arch = _identify_quietly(state_dict, config)
    if arch is not None and not _agrees(arch, config, data_shape, role):
      found = f'it holds {arch.describe()}'
    else:  # unreadable, or the same architecture with keys gone wrong
      problems = []
      for label, items in (('lacks', missing), ('has unexpected', extra),
                           ('has wrong shapes:', wrong)):
        if items:
          more = f' (and {len(items) - 2} more)' if len(items) > 2 else ''
          problems.append(f'{label} {", ".join(items[:2])}{more}')
      found = f'it {"; ".join(problems)}'
    raise UserError(f'{what} does not fit {_expected(config, data_shape, role)}: '
                    f'{found}. Pass the matching flags, or let '
                    'config_from_reference read them from the files.')
  variables = {'params': {}, 'batch_stats': {}}
  for e in entries:
    x = to_flax(np.asarray(state_dict[e.key], np.float32), e.kind, data_shape)
    if e.negate and negate:
      x = -x
    variables[e.collection].setdefault(e.module, {})[e.leaf] = jnp.asarray(x)
  return variables


def _expected(config, data_shape, role: str) -> str:
  kind = config.generator if role == 'generator' else config.critic
  if len(data_shape) == 3:
    data = f'{data_shape[0]}px, {data_shape[2]} channel(s)'
  else:
    data = 'points in the plane'
  if role == 'generator':
    fields = f'nz={config.nz}, ngf={config.ngf}'
    if kind == 'dcgan':
      fields += f', n_extra_layers={config.n_extra_layers}, no_bn={config.no_bn}'
  else:
    fields = f'ndf={config.ndf}'
    if kind == 'dcgan':
      fields += (f', n_extra_layers={config.n_extra_layers}, '
                 f'critic_bn={config.critic_bn}')
  net = 'MLP' if kind == 'mlp' else 'DCGAN'
  return f'the {net} {role} of this config ({data}, {fields})'


def _as_state_dict(source, name: str):
  """(state_dict, name for messages) of a state_dict or a .pth path."""
  if isinstance(source, Mapping):
    return source, name
  return load_state_dict(source), os.fspath(source)


def _variables(role, source, config, data_shape, negate_last=True) -> dict:
  state_dict, name = _as_state_dict(source, f'the {role} state_dict')
  if data_shape is None:
    data_shape = reference_data_shape(config, state_dict)
  data_shape = tuple(data_shape)
  return _convert(state_dict, config, data_shape, role, name, negate=negate_last)


def generator_variables(state_dict, config, data_shape: Sequence[int] | None = None
                        ) -> dict:
  """The reference generator's state_dict (or its .pth path) as our variables.

  Returns ``{'params': ..., 'batch_stats': ...}`` for
  ``models.make_generator(config, data_shape)``. ``data_shape`` defaults to
  the config's images (channels from the file when ``config.channels`` is 0;
  points when the file is an MLP with 2 outputs). A file that does not fit
  raises ``UserError`` naming what was expected and what the file looks like.
  """
  return _variables('generator', state_dict, config, data_shape)


def critic_variables(state_dict, config, data_shape: Sequence[int] | None = None,
                     *, negate_last: bool = True) -> dict:
  """The reference critic's state_dict (or its .pth path) as our variables.

  As ``generator_variables``; the last layer is negated (see the module
  docstring) unless ``negate_last=False``, which keeps the reference's sign
  (for quantities even in the gradient, such as RMSProp's square averages).
  """
  return _variables('critic', state_dict, config, data_shape, negate_last)


def config_from_reference(generator=None, critic=None, config=None):
  """A config whose architecture fields are those of the reference files.

  ``generator``/``critic`` are state_dicts or .pth paths (either may be
  None); ``config`` (default: ``configs.get_config()``) supplies everything
  else and is not modified. Sets generator/critic (dcgan|mlp), nz, ngf, ndf,
  image_size, channels, n_extra_layers, no_bn and critic_bn as far as the
  files tell them. Files that contradict each other, or a netD given as the
  generator (and vice versa), raise ``UserError``.
  """
  config = copy.deepcopy(config if config is not None else _default_config())
  found = []
  for role, source in (('generator', generator), ('critic', critic)):
    if source is None:
      continue
    state_dict, name = _as_state_dict(source, f'the {role} state_dict')
    try:
      arch = identify(state_dict, config.channels, config.image_size)
    except UserError as e:
      raise UserError(f'{name}: {e}.') from None
    if arch.role != role:
      raise UserError(f'{name} holds {arch.describe()}, not a {role}; pass it as '
                      f'the {arch.role} file.')
    found.append((name, arch))
  if not found:
    raise UserError('config_from_reference needs a generator or a critic file.')
  shapes = {arch.data_shape for _, arch in found if arch.data_shape is not None}
  if len(shapes) > 1:
    raise UserError(' and '.join(f'{n} holds {a.describe()}' for n, a in found)
                    + ': the two nets do not fit the same data.')
  extras = {arch.fields['n_extra_layers'] for _, arch in found
            if 'n_extra_layers' in arch.fields}
  if len(extras) > 1:
    raise UserError(' and '.join(f'{n} holds {a.describe()}' for n, a in found)
                    + ': the reference (and this code) give both nets the same '
                    'n_extra_layers.')
  for name, arch in found:
    if arch.data_shape is None:
      raise UserError(f'{name}: an MLP with {arch.flat_size} image values; cannot '
                      'tell the image size and channels apart: pass --image_size '
                      'and --channels.')
    config[arch.role] = arch.kind
    for field, value in arch.fields.items():
      config[field] = value
    if len(arch.data_shape) == 3:
      config.image_size, config.channels = arch.data_shape[0], arch.data_shape[2]
  return config


def state_from_reference(netG_path, netD_path, config, key: jax.Array, *,  # pylint: disable=invalid-name
                         data_shape: Sequence[int] | None = None,
                         axis_name: str | None = None) -> WGANState:
  """A ``WGANState`` holding the reference's saved networks.

  Either path may be None: that network is freshly initialised from ``key``
  (the reference, too, loads ``--netG`` and ``--netD`` independently). The
  imported networks get their parameters and BatchNorm running statistics
  from the files and fresh optimiser states (the reference saves none);
  ``gen_iter`` is 0. ``config`` must describe the files' architecture (see
  ``config_from_reference``); ``data_shape`` defaults to the config's
  (``key`` and ``axis_name`` as in ``state.create_state``).
  """
  if netG_path is None and netD_path is None:
    raise UserError('nothing to import: pass a generator (netG) or a critic '
                    '(netD) file, or both.')
  sources = {'generator': netG_path, 'critic': netD_path}
  loaded = {role: _as_state_dict(src, role) for role, src in sources.items()
            if src is not None}
  if data_shape is None:
    data_shape = reference_data_shape(config, *(sd for sd, _ in loaded.values()))
  data_shape = tuple(data_shape)
  converted = {}
  for role, (state_dict, name) in loaded.items():
    converted[role] = _convert(state_dict, config, data_shape, role, name)
  make = functools.partial(create_state, config, data_shape, axis_name=axis_name)
  if len(converted) == 2:
    # Nothing of a fresh initialisation survives: trace it (for the structure
    # and the static parts) instead of running it, which takes seconds.
    state = jax.eval_shape(make, key)
    _, _, run_key = jax.random.split(key, 3)  # as create_state derives it
    state = state.replace(gen_iter=jnp.zeros((), jnp.int32),
                          rng=jax.random.key_data(run_key))
  else:
    state = make(key)
  for role, variables in converted.items():
    state = state.replace(**{role: _with_variables(getattr(state, role), variables)})
  if any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(state)):
    raise AssertionError('WGANState has fields state_from_reference does not fill')
  return state


def _with_variables(ts, variables):
  # tree.map also checks that the converted tree is the module's own.
  cast = lambda new, old: jnp.asarray(new, old.dtype)
  params = jax.tree.map(cast, variables['params'], ts.params)
  batch_stats = jax.tree.map(cast, variables['batch_stats'], ts.batch_stats)
  return ts.replace(step=0, params=params, batch_stats=batch_stats,
                    opt_state=ts.tx.init(params))


# ---------------------------------------------------------------------------
# Command line: python -m wgan_jax.reference.importer --netG=... --netD=... --workdir=DIR


def import_into_workdir(netG, netD, config, workdir: str) -> str:  # pylint: disable=invalid-name
  """Writes the reference's nets as checkpoint 0 of a run in ``workdir``.

  ``config`` supplies the options the files cannot tell (dataset, training
  options); the architecture comes from the files. ``wgan_jax.generate``
  then samples from ``workdir`` and ``wgan_jax.train --workdir`` continues
  training from it, as the reference does when given --netG and --netD.
  Returns the checkpoint folder.
  """
  from wgan_jax import checkpoints  # pylint: disable=g-import-not-at-top
  config = config_from_reference(netG, netD, config)
  data_shape = reference_data_shape(config, *(p for p in (netG, netD) if p))
  ckpt_dir = checkpoints.directory(workdir)
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    raise UserError(f'{ckpt_dir} already holds checkpoints; import into a new '
                    '--workdir.')
  init_key, fixed_noise = initial_randomness(config)
  state = state_from_reference(netG, netD, config, init_key, data_shape=data_shape)
  ckpt = checkpoints.Checkpointer(workdir, config, data_shape)
  try:
    ckpt.save(0, state, fixed_noise, data_position=0)
  finally:
    ckpt.close()
  return ckpt.path


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  flag_values = flags.FLAGS
  if not (flag_values.netG or flag_values.netD):
    raise UserError('nothing to import: pass --netG, --netD or both.')
  from wgan_jax import cli  # pylint: disable=g-import-not-at-top
  config = cli.build_config()
  path = import_into_workdir(flag_values.netG, flag_values.netD, config,
                             flag_values.workdir)
  print(f'Imported into {path}:\n'
        f'  python -m wgan_jax.generate --workdir={flag_values.workdir} '
        '--num=64 --out=samples.png\n'
        f'  python -m wgan_jax.train --workdir={flag_values.workdir}')


if __name__ == '__main__':
  from wgan_jax import cli  # pylint: disable=g-import-not-at-top
  cli.define_config_flags()
  flags.DEFINE_string('netG', None, "The reference's generator file (netG_epoch_N.pth).")
  flags.DEFINE_string('netD', None, "The reference's critic file (netD_epoch_N.pth).")
  flags.DEFINE_string('workdir', None, 'A new run directory to import into.',
                      required=True)
  app.run(cli.user_errors(main))
