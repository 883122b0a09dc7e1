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


# The flag kind of each type of config value (bool before int: a bool is an int).
_KINDS = ((bool, flags.DEFINE_boolean), (int, flags.DEFINE_integer),
          (float, flags.DEFINE_float), (str, flags.DEFINE_string))


def _define(name: str, value, text: str, flag_values) -> None:
  define = next(d for t, d in _KINDS if isinstance(value, t))
  define(name, None, text, flag_values=flag_values)


def _help(name: str) -> str:
  """The field's comment in configs/default.py, with the default and any
  per-dataset preset and per-loss values."""
  text = configs.field_help()[name]
  if name == 'loss':
    text += '. Each sets its paper\'s defaults for these options, unless they are ' \
        'given explicitly (as flags or in --config): ' + _loss_table()
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
  return f'{text.rstrip(".")} (default: {"; ".join(shown)}).{losses}'


def define_config_flags(flag_values=FLAGS) -> None:
  """--config plus one flag per field of the default config (None when not
  given), its help the field's comment in configs/default.py."""
  config_flags.DEFINE_config_file(
      'config', None, 'An ml_collections config file (a Python file with '
      'get_config(), see wgan_jax/configs/). Without it, configs/default.py plus '
      "the dataset's preset is used. --config.FIELD=VALUE overrides one field.",
      flag_values=flag_values)
  for name, value in DEFAULTS.items():
    _define(name, value, _help(name), flag_values)


def build_config(flag_values=FLAGS, base=None) -> ml_collections.ConfigDict:
  """The config the flags ask for (``configs.build``): --config (or ``base``,
  the config of a run being resumed, or the default plus the dataset's
  preset), the loss's defaults for the fields neither sets, then the flags
  given explicitly."""
  given = {name: flag_values[name].value for name in DEFAULTS.keys()
           if flag_values[name].present}
  return configs.build(file_config=flag_values.config, base=base, flags=given)


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
