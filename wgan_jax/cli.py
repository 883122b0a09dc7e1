"""Command-line plumbing shared by the entry points: config flags, user errors.

Flags are defined on request (``define_config_flags``), not on import, so that
``wgan_jax.train`` and the other modules import cleanly into notebooks, tests
and other programs.
"""

from __future__ import annotations

import functools
import logging as py_logging
import os
import sys

import ml_collections
from absl import flags
from ml_collections import config_flags

from wgan_jax import configs
from wgan_jax.errors import UserError

FLAGS = flags.FLAGS
DEFAULTS = configs.default.get_config()


def _loss_table() -> str:
  return '; '.join(
      f'{loss}: ' + ', '.join(f'{k}={v}' for k, v in values.items())
      for loss, values in configs.LOSS_DEFAULTS.items())


# One flag per config field a user is likely to set: (kind, field, help).
CONFIG_FLAGS = (
    ('string', 'dataset',
     'Dataset: digits | stacked_digits | gaussians8 | gaussians25 | swissroll (embedded), a '
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
    ('string', 'loss',
     'Objective: wgan (weight clipping, Arjovsky et al. 2017) | wgan-gp (gradient '
     'penalty, Gulrajani et al. 2017) | gan (the standard GAN: sigmoid '
     'cross-entropy, non-saturating generator loss, DCGAN settings). Each sets '
     'its paper\'s defaults for these options, unless they are given '
     'explicitly (as flags or in --config): ' + _loss_table()),
    ('float', 'lr_critic', 'Critic learning rate'),
    ('float', 'lr_gen', 'Generator learning rate'),
    ('string', 'optimizer', 'Optimiser: rmsprop | adam'),
    ('float', 'beta1', 'Adam beta1'),
    ('float', 'beta2', 'Adam beta2'),
    ('float', 'clip', 'Clip critic weights to [-clip, clip]; 0 does not clip'),
    ('float', 'gp_weight', 'wgan-gp: weight (lambda) of the gradient penalty'),
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
    ('integer', 'num_seeds',
     'Train this many independent runs at once (seeds seed, seed + 1, ...; one '
     'compile, vmapped), each with its own outputs in WORKDIR/seed_<seed>/'),
    ('string', 'rng_impl',
     'PRNG: rbg (fast, reproducible on one backend) | threefry2x32 (same numbers '
     'on every backend)'),
    ('integer', 'sample_every', 'Write a sample grid every this many generator iterations'),
    ('integer', 'num_samples', 'Samples in each grid or scatter plot'),
    ('integer', 'log_every', 'Fetch metrics from the devices every this many iterations'),
    ('boolean', 'progress_bar', 'Show a progress bar'),
    ('integer', 'checkpoint_every',
     'Save a checkpoint every this many generator iterations and at the end; 0 '
     'only at the end'),
    ('integer', 'keep_checkpoints', 'Keep the newest this many checkpoints'),
    ('integer', 'num_devices', 'Local devices to use; 0 uses all'),
    ('string', 'convt_impl',
     "Formulation of the generator's transposed convs (same numbers, different "
     'speed): auto | subpixel | dilated'),
    ('string', 'conv_impl',
     "How the critic's strided convs' kernel gradient is computed (same numbers up "
     'to rounding, different speed): auto (taps on CPU) | taps | xla'),
    ('string', 'iteration_mode',
     'How a generator iteration is compiled: auto | scan | unroll | steps'),
    ('string', 'seeds_mode',
     'How the seeds of --num_seeds share one compiled step (same numbers up to '
     'rounding, different speed): auto (on CPU unroll for DCGAN nets, vmap for '
     'MLPs; vmap elsewhere) | vmap | map | unroll | hybrid'),
    ('string', 'compute_dtype',
     "The nets' arithmetic: float32 | bfloat16 (parameters, optimiser state, "
     'BatchNorm statistics and losses stay float32; faster on GPUs and TPUs, '
     'not on CPUs without bfloat16 units)'),
    ('string', 'compilation_cache_dir',
     "Keep compiled steps in this directory for later runs (jax's persistent "
     "compilation cache); '' = off"),
)


def _help(name: str, text: str) -> str:
  """The help text with the default and any per-dataset preset values."""
  shown = [repr(DEFAULTS[name])]
  by_value: dict = {}
  for dataset, preset in configs.PRESETS.items():
    if name in preset:
      by_value.setdefault(preset[name], []).append(dataset)
  shown += [f'{value!r} for {", ".join(names)}' for value, names in by_value.items()]
  by_loss: dict = {}
  for loss, values in configs.LOSS_DEFAULTS.items():
    if name in values and values[name] != DEFAULTS[name]:
      by_loss.setdefault(values[name], []).append(loss)
  losses = ''.join(
      f' --loss={" and ".join(names)} {"sets" if len(names) == 1 else "set"} {value!r}.'
      for value, names in by_loss.items())
  return f'{text} (default: {"; ".join(shown)}).{losses}'


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


def build_config(flag_values=FLAGS, base=None) -> ml_collections.ConfigDict:
  """--config (or ``base``, or the default plus the dataset's preset), then
  the loss's defaults for the fields neither the file nor a flag sets, then
  the flags.

  ``base`` is the config of a run being resumed: its options stay unless a
  flag changes them (a flag that changes the loss brings that loss's defaults).
  """
  if flag_values.config is not None:
    config = flag_values.config
    config.unlock()
    explicit = configs.explicit_fields(config)
  elif base is not None:
    config = ml_collections.ConfigDict(base.to_dict())
    new_loss = flag_values['loss'].value not in (None, config.get('loss'))
    explicit = set() if new_loss else set(config.keys())
  else:
    config = configs.get_config(flag_values.dataset or DEFAULTS.dataset)
    explicit = set()
  for _, name, _ in CONFIG_FLAGS:
    value = flag_values[name].value
    if value is not None:
      config[name] = value
      explicit.add(name)
  return configs.apply_loss_defaults(config, explicit)


def define_distributed_flags(flag_values=FLAGS) -> None:
  """Flags to run as one of several processes (``jax.distributed``)."""
  flags.DEFINE_boolean(
      'distributed', False, 'Run as one process of several (jax.distributed): '
      'the cluster is detected on Cloud TPU, SLURM or Open MPI; elsewhere pass '
      '--coordinator_address, --num_processes and --process_id.',
      flag_values=flag_values)
  flags.DEFINE_string('coordinator_address', None,
                      'host:port of process 0 of a multi-process run (implies '
                      '--distributed).', flag_values=flag_values)
  flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process run.',
                       flag_values=flag_values)
  flags.DEFINE_integer('process_id', None, "This process's index in a "
                       'multi-process run: 0, 1, ..., num_processes - 1.',
                       flag_values=flag_values)


def initialize_distributed(flag_values=FLAGS) -> None:
  """Joins the multi-process run the distributed flags ask for, if any."""
  if flag_values.distributed or flag_values.coordinator_address:
    from wgan_jax import parallel  # pylint: disable=g-import-not-at-top
    parallel.initialize_distributed(flag_values.coordinator_address,
                                    flag_values.num_processes,
                                    flag_values.process_id)


def quiet_jax_logs() -> None:
  # jax reports each accelerator plugin it did not find; that is not news.
  py_logging.getLogger('jax._src.xla_bridge').setLevel(py_logging.WARNING)
  # orbax narrates every save in a dozen INFO lines; keep its warnings.
  py_logging.getLogger('absl').addFilter(_below_warning_from('orbax'))


def _below_warning_from(package: str) -> py_logging.Filter:
  """A filter that drops records below WARNING logged from ``package``."""
  marker = f'{os.sep}{package}{os.sep}'

  class Filter(py_logging.Filter):

    def filter(self, record):
      return record.levelno >= py_logging.WARNING or marker not in record.pathname

  return Filter()


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
