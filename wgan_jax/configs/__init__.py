"""Configs: ``default.get_config()``, per-dataset presets, per-loss defaults,
the one order in which they apply (``build``) and the one check (``validate``).

Precedence, lowest first (``build``): the default config, ``PRESETS[dataset]``
(if any), ``LOSS_DEFAULTS[loss]``, a ``--config`` file (with its
``--config.FIELD`` overrides), the flags given explicitly. A ``--config``
file replaces the first two steps; the loss defaults then fill in only the
fields the file leaves as they were (``explicit_fields``), so a flag or a
field the file sets always wins over the loss's default. Resuming a run
starts from its saved config instead, every field of it explicit.

``field_help()`` reads each field's comment in ``default.py``: the help of
its flag (``wgan_jax.cli`` defines one flag per field).
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Mapping

import ml_collections

from wgan_jax.configs import default
from wgan_jax.errors import UserError

# 2-D data: the reference's MLP nets on points, sized as in the WGAN-GP
# paper's toy experiments (latent size 2, width 512, batch 256).
_TOY = dict(generator='mlp', critic='mlp', nz=2, ngf=512, ndf=512,
            batch_size=256, num_gen_iters=2000, sample_every=250, num_samples=1024)

# 8x8 digits need no 64px nets: 16px and half the width train in ~2 minutes
# on a 2-core CPU and give recognisable digits.
_DIGITS = dict(image_size=16, ngf=32, ndf=32, num_gen_iters=1000, sample_every=100)
# Three digits stacked as colour channels: the same nets and schedule.
_STACKED_DIGITS = dict(_DIGITS, channels=3)

# mnist5k (28px MNIST padded to 32px): DCGAN at 32px, nets as narrow as the
# digits'. On the 2-core CPU 1000 iterations (ngf = ndf = 16) do not yet give
# readable digits and 2000 barely (classifier FD 423, then 210; real digits
# 3.2), hence 5000. stacked_mnist5k: the same with 3 channels.
_MNIST5K = dict(image_size=32, ngf=32, ndf=32, num_gen_iters=5000, sample_every=250)
_STACKED_MNIST5K = dict(_MNIST5K, channels=3)

# CelebA: the reference's defaults (64px, batch 64, ngf = ndf = 64) on all
# 202,599 aligned faces, centre-cropped to 108x108 before resizing (the DCGAN
# convention); LSUN bedrooms, the paper's own dataset, takes the defaults as
# they are.
_CELEB_A = dict(crop=108, split='all')
# Small images train near their own size (28px digits resized up to 32, the
# nearest multiple of 16); the nets keep the reference's widths.
_SMALL = dict(image_size=32)

PRESETS = {
    'digits': _DIGITS,
    'stacked_digits': _STACKED_DIGITS,
    'mnist5k': _MNIST5K,
    'stacked_mnist5k': _STACKED_MNIST5K,
    'gaussians8': _TOY,
    'gaussians25': _TOY,
    'swissroll': _TOY,
    'celeb_a': _CELEB_A,
    'cifar10': _SMALL,
    'mnist': _SMALL,
    'fashion_mnist': _SMALL,
}


# Each loss's paper: its optimiser, learning rates, clipping, critic schedule
# and critic normalisation. Every loss names every field, so switching the
# loss of a config replaces all of the previous loss's choices.
LOSS_DEFAULTS = {
    # Arjovsky et al. 2017 and its reference code (= configs/default.py).
    'wgan': dict(optimizer='rmsprop', lr_critic=5e-5, lr_gen=5e-5, beta1=0.5,
                 beta2=0.999, clip=0.01, n_critic=5, warmup_gen_iters=25,
                 boost_every=500, critic_bn=True),
    # Gulrajani et al. 2017, Algorithm 1: Adam (1e-4, 0, 0.9), 5 critic steps,
    # no clipping, no warm-up; no BatchNorm in the critic (the penalty is per
    # example, which batch statistics would couple).
    'wgan-gp': dict(optimizer='adam', lr_critic=1e-4, lr_gen=1e-4, beta1=0.0,
                    beta2=0.9, clip=0.0, n_critic=5, warmup_gen_iters=0,
                    boost_every=0, critic_bn=False),
    # DCGAN (Radford et al. 2016): Adam (2e-4, 0.5), one discriminator step per
    # generator step, BatchNorm in the discriminator.
    'gan': dict(optimizer='adam', lr_critic=2e-4, lr_gen=2e-4, beta1=0.5,
                beta2=0.999, clip=0.0, n_critic=1, warmup_gen_iters=0,
                boost_every=0, critic_bn=True),
}


def get_config(dataset: str | None = None,
               loss: str | None = None) -> ml_collections.ConfigDict:
  """The default config with the preset for ``dataset`` and the defaults of
  ``loss`` applied."""
  config = default.get_config()
  if dataset is not None:
    config.dataset = dataset
  with config.ignore_type():
    config.update(PRESETS.get(config.dataset, {}))
  if loss is not None:
    config.loss = loss
    apply_loss_defaults(config)
  return config


def apply_loss_defaults(config: ml_collections.ConfigDict,
                        explicit=frozenset()) -> ml_collections.ConfigDict:
  """Sets the defaults of ``config.loss`` in ``config`` (in place), except the
  fields named in ``explicit``. An unknown loss is left for validation."""
  with config.ignore_type():
    for name, value in LOSS_DEFAULTS.get(config.loss, {}).items():
      if name not in explicit:
        config[name] = value
  return config


def explicit_fields(config: ml_collections.ConfigDict) -> set[str]:
  """The fields a config file set itself: those that differ both from the
  default config with its dataset's preset and from that with its loss's
  defaults. (A file may build on either; a field set to exactly one of those
  values cannot be told apart from it, and counts as not set.)"""
  plain = get_config(config.dataset)
  with_loss = get_config(config.dataset, config.loss)
  return {name for name in config.keys()
          if name not in plain or (config[name] != plain[name]
                                   and config[name] != with_loss[name])}


def build(dataset: str | None = None, *, file_config=None, base=None,
          flags: dict | None = None) -> ml_collections.ConfigDict:
  """The config of a run, in the precedence of the module docstring.

  ``file_config``: a ``--config`` file's config (overrides included);
  ``base``: the saved config of a run being resumed (its options stay unless
  a flag changes them; a flag that changes the loss brings that loss's
  defaults); ``flags``: the fields given explicitly on the command line.
  ``dataset`` (default: the flags' or the default's) picks the preset when
  neither of the other two is given.
  """
  flags = dict(flags or {})
  if file_config is not None:
    config = file_config
    config.unlock()
    explicit = explicit_fields(config)
  elif base is not None:
    config = ml_collections.ConfigDict(base.to_dict())
    new_loss = flags.get('loss', config.get('loss')) != config.get('loss')
    explicit = set() if new_loss else set(config.keys())
  else:
    config = get_config(flags.get('dataset') or dataset)
    explicit = set()
  for name, value in flags.items():
    config[name] = value
    explicit.add(name)
  return apply_loss_defaults(config, explicit)


@functools.lru_cache(maxsize=None)
def field_help() -> dict[str, str]:
  """{field: its comment in ``default.get_config``} (the line's own comment,
  else the comment lines just above it; ``# --- Section ---`` lines are not
  help)."""
  helps, pending = {}, []
  for line in inspect.getsource(default.get_config).splitlines():
    line = line.strip()
    if line.startswith('#'):
      text = line[1:].strip()
      pending = [] if text.startswith('---') else [*pending, text]
      continue
    match = re.match(r'c\.(\w+) = .*?(?:  # (.*))?$', line)
    if match:
      helps[match.group(1)] = match.group(2) or ' '.join(pending)
    pending = []
  return helps


# The fields that take one of a few values: (values, how a message lists them).
CHOICES = {
    'loss': (('wgan', 'wgan-gp', 'gan'), 'wgan, wgan-gp, gan'),
    'generator': (('dcgan', 'mlp'), 'dcgan or mlp'),
    'critic': (('dcgan', 'mlp'), 'dcgan or mlp'),
    'optimizer': (('rmsprop', 'adam'), 'rmsprop or adam'),
    'rng_impl': (('rbg', 'unsafe_rbg', 'threefry2x32'), 'rbg or threefry2x32'),
    'clip_when': (('after', 'before'), 'after or before'),
    'iteration_mode': (('auto', 'scan', 'unroll', 'steps'),
                       'one of auto, scan, unroll, steps'),
    'seeds_mode': (('auto', 'vmap', 'map', 'unroll', 'hybrid', 'processes'),
                   'one of auto, vmap, map, unroll, hybrid, processes'),
    'compute_dtype': (('float32', 'bfloat16'), 'float32 or bfloat16'),
}


def choice_error(name: str, value) -> UserError:
  """The error for ``--name=value`` outside ``CHOICES[name]``."""
  return UserError(f'--{name}={value!r}: choose {CHOICES[name][1]}.')


def check_choice(name: str, value):
  """``value`` if ``CHOICES[name]`` allows it; else raises ``choice_error``."""
  if value not in CHOICES[name][0]:
    raise choice_error(name, value)
  return value


_POSITIVE = ('batch_size', 'nz', 'ngf', 'ndf', 'n_critic', 'n_critic_warmup',
             'sample_every', 'num_samples', 'log_every', 'keep_checkpoints')
_NOT_NEGATIVE = ('num_gen_iters', 'n_extra_layers', 'warmup_gen_iters',
                 'boost_every', 'channels', 'num_devices', 'checkpoint_every')


def validate(config) -> None:
  """Raises UserError for settings that cannot work, naming the fix (the one
  check of a config: training runs it first, the factories use its
  ``check_choice``)."""
  for name in _POSITIVE:
    if config[name] <= 0:
      raise UserError(f'--{name}={config[name]}: must be positive.')
  for name in _NOT_NEGATIVE:
    if config[name] < 0:
      raise UserError(f'--{name}={config[name]}: must not be negative.')
  for name in ('lr_critic', 'lr_gen'):
    if not config[name] > 0:
      raise UserError(f'--{name}={config[name]}: must be positive.')
  if not config.clip >= 0:
    raise UserError(f'--clip={config.clip}: must be positive, or 0 not to clip.')
  if not config.gp_weight >= 0:
    raise UserError(f'--gp_weight={config.gp_weight}: must not be negative.')
  if config.num_seeds < 1:
    raise UserError(f'--num_seeds={config.num_seeds}: must be at least 1.')
  if config.image_size <= 0:
    raise UserError(f'--image_size={config.image_size}: must be positive.')
  if 'dcgan' in (config.generator, config.critic) and (
      config.image_size < 16 or config.image_size % 16):
    raise UserError(
        f'--image_size={config.image_size}: DCGAN models need a multiple of 16 '
        '(16, 32, 64, 128, ...).')
  for name in ('generator', 'critic', 'optimizer', 'rng_impl', 'clip_when', 'loss',
               'iteration_mode'):
    check_choice(name, config[name])
  check_choice('compute_dtype', config.get('compute_dtype', 'float32'))
  check_choice('seeds_mode', config.get('seeds_mode', 'auto'))


# Options that fix the shapes of what a checkpoint holds (or the data it was
# trained on): a run cannot resume under different values.
SHAPE_OPTIONS = ('dataset', 'image_size', 'channels', 'generator', 'critic', 'nz',
                 'ngf', 'ndf', 'n_extra_layers', 'no_bn', 'critic_bn', 'optimizer',
                 'rng_impl', 'num_samples')
# Options that only say how long to train, how to log, or how to compute the
# same numbers: they may change on resume without a word. Changes to the rest
# (learning rates, schedule, seed, ...) are allowed and logged as a warning.
FREE_OPTIONS = ('num_gen_iters', 'sample_every', 'log_every', 'progress_bar',
                'num_devices', 'convt_impl', 'conv_tuning', 'iteration_mode', 'seeds_mode', 'data_dir',
                'checkpoint_every', 'keep_checkpoints', 'data_on_device', 'prefetch_batches')


def config_changes(saved: Mapping, config) -> tuple[list[str], list[str]]:
  """(shape options, other options) whose values differ, as 'name a -> b'."""
  shape, other = [], []
  current = json.loads(config.to_json())
  for name in sorted(set(saved) | set(current)):
    if name not in saved or name not in current or name in FREE_OPTIONS:
      continue  # an option added or removed between versions has its default
    if saved[name] != current[name]:
      change = f'{name} {saved[name]!r} -> {current[name]!r}'
      (shape if name in SHAPE_OPTIONS else other).append(change)
  return shape, other
