"""Command-line plumbing shared by the entry points: config flags, user errors.

Flags are defined on request (``define_config_flags``), not on import, so that
``wgan_jax.train`` and the other modules import cleanly into notebooks, tests
and other programs.
"""

from __future__ import annotations

import functools
import logging as py_logging
import sys

import ml_collections
from absl import flags
from ml_collections import config_flags

from wgan_jax import configs
from wgan_jax.errors import UserError

FLAGS = flags.FLAGS
_DEFAULTS = configs.default.get_config()

# One flag per config field a user is likely to set: (kind, field, help).
CONFIG_FLAGS = (
    ('string', 'dataset',
     'Dataset: digits | gaussians8 | gaussians25 | swissroll (embedded), a '
     'tensorflow-datasets image dataset (celeb_a, cifar10, mnist, fashion_mnist, '
     'lsun/bedroom, ...) or folder:PATH (every image under PATH)'),
    ('string', 'data_dir',
     "tensorflow-datasets' data_dir ('' = $TFDS_DATA_DIR or ~/tensorflow_datasets)"),
    ('string', 'split', 'tensorflow-datasets split: train | test | train+test | all | ...'),
    ('integer', 'image_size', 'Image height and width; a multiple of 16 for DCGAN models'),
    ('integer', 'channels', "Image channels (1 grey, 3 colour); 0 keeps the dataset's"),
    ('integer', 'crop',
     'Side of the centred square cut from each image before resizing; 0 = the largest'),
    ('string', 'cache_dir',
     "Where decoded images are cached ('' = beside the data)"),
    ('string', 'data_on_device',
     'Keep the whole dataset on each device: auto (where it fits) | true | false'),
    ('integer', 'batch_size', 'Global batch size, split over the devices'),
    ('integer', 'nz', 'Size of the latent vector z'),
    ('integer', 'ngf', 'Generator width'),
    ('integer', 'ndf', 'Critic width'),
    ('string', 'generator', 'Generator architecture: dcgan | mlp'),
    ('string', 'critic', 'Critic architecture: dcgan | mlp'),
    ('boolean', 'no_bn', 'DCGAN generator without BatchNorm (the reference\'s --noBN)'),
    ('boolean', 'critic_bn', 'BatchNorm in the DCGAN critic'),
    ('integer', 'n_extra_layers', 'Extra 3x3 conv layers in the DCGAN generator and critic'),
    ('float', 'lr_critic', 'Critic learning rate'),
    ('float', 'lr_gen', 'Generator learning rate'),
    ('string', 'optimizer', 'Optimiser: rmsprop | adam'),
    ('float', 'beta1', 'Adam beta1'),
    ('float', 'clip', 'Critic weights are clipped to [-clip, clip]'),
    ('string', 'clip_when',
     'Clip after each critic update (paper) or before each critic step (reference '
     'code): after | before'),
    ('integer', 'n_critic', 'Critic iterations per generator iteration'),
    ('integer', 'n_critic_warmup',
     'Critic iterations during warm-up and on every boost_every-th generator iteration'),
    ('integer', 'warmup_gen_iters', 'Generator iterations that get n_critic_warmup'),
    ('integer', 'boost_every',
     'Every this many generator iterations the critic gets n_critic_warmup; 0 never'),
    ('integer', 'num_gen_iters', 'Generator iterations to train'),
    ('integer', 'seed', 'Random seed (initialisation, noise, data order)'),
    ('string', 'rng_impl',
     'PRNG: rbg (fast, reproducible on one backend) | threefry2x32 (same numbers '
     'on every backend)'),
    ('integer', 'sample_every', 'Write a sample grid every this many generator iterations'),
    ('integer', 'num_samples', 'Samples in each grid or scatter plot'),
    ('integer', 'log_every', 'Fetch metrics from the devices every this many iterations'),
    ('boolean', 'progress_bar', 'Show a progress bar'),
    ('integer', 'num_devices', 'Local devices to use; 0 uses all'),
    ('string', 'convt_impl',
     "Formulation of the generator's transposed convs (same numbers, different "
     'speed): auto | subpixel | dilated'),
    ('string', 'conv_impl',
     "How the critic's strided convs' kernel gradient is computed (same numbers up "
     'to rounding, different speed): auto (taps on CPU) | taps | xla'),
    ('string', 'iteration_mode',
     'How a generator iteration is compiled: auto | scan | unroll | steps'),
    ('string', 'compilation_cache_dir',
     "Keep compiled steps in this directory for later runs (jax's persistent "
     "compilation cache); '' = off"),
)


def _help(name: str, text: str) -> str:
  """The help text with the default and any per-dataset preset values."""
  shown = [repr(_DEFAULTS[name])]
  by_value: dict = {}
  for dataset, preset in configs.PRESETS.items():
    if name in preset:
      by_value.setdefault(preset[name], []).append(dataset)
  shown += [f'{value!r} for {", ".join(names)}' for value, names in by_value.items()]
  return f'{text} (default: {"; ".join(shown)}).'


def define_config_flags(flag_values=FLAGS) -> None:
  """--config plus one flag per field of CONFIG_FLAGS (None when not given)."""
  config_flags.DEFINE_config_file(
      'config', None, 'An ml_collections config file (a Python file with '
      'get_config(), see wgan_jax/configs/). Without it, configs/default.py plus '
      "the dataset's preset is used. --config.FIELD=VALUE overrides one field.",
      flag_values=flag_values)
  for kind, name, text in CONFIG_FLAGS:
    getattr(flags, f'DEFINE_{kind}')(name, None, _help(name, text),
                                     flag_values=flag_values)


def build_config(flag_values=FLAGS) -> ml_collections.ConfigDict:
  """--config (or the default plus the dataset's preset), then the flags given."""
  if flag_values.config is not None:
    config = flag_values.config
    config.unlock()
  else:
    config = configs.get_config(flag_values.dataset or _DEFAULTS.dataset)
  for _, name, _ in CONFIG_FLAGS:
    value = flag_values[name].value
    if value is not None:
      config[name] = value
  return config


def quiet_jax_logs() -> None:
  # jax reports each accelerator plugin it did not find; that is not news.
  py_logging.getLogger('jax._src.xla_bridge').setLevel(py_logging.WARNING)


def user_errors(main):
  """Wraps an absl main: a UserError is printed as one line, exit status 2."""

  @functools.wraps(main)
  def wrapped(argv):
    quiet_jax_logs()
    try:
      return main(argv)
    except UserError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)

  return wrapped
