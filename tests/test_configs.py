"""Configs: presets, per-loss defaults, the precedence of defaults, files and
flags, the flags derived from the default config, and validation."""

import sys
from unittest import mock

import pytest
from absl import flags

from wgan_jax import cli, configs, train
from wgan_jax.errors import UserError


def _flag_config(*args):
  argv = ['train', *args]
  flag_values = flags.FlagValues()
  # ml_collections defines the --config.FIELD flags from sys.argv.
  with mock.patch.object(sys, 'argv', argv):
    cli.define_config_flags(flag_values)
    flag_values(argv)
  return cli.build_config(flag_values)


def test_wgan_defaults_are_the_default_config():
  for dataset in ('digits', 'gaussians8'):
    assert configs.get_config(dataset, 'wgan') == configs.get_config(dataset)
  fields = {frozenset(v) for v in configs.LOSS_DEFAULTS.values()}
  assert len(fields) == 1  # every loss names every field
  for preset in configs.PRESETS.values():  # presets do not fight the losses
    assert not set(preset) & set(configs.LOSS_DEFAULTS['wgan'])


def test_each_loss_sets_its_paper_defaults():
  gp = _flag_config('--loss=wgan-gp')
  assert (gp.optimizer, gp.lr_critic, gp.lr_gen, gp.beta1, gp.beta2, gp.clip,
          gp.n_critic, gp.warmup_gen_iters, gp.boost_every, gp.critic_bn,
          gp.gp_weight) == ('adam', 1e-4, 1e-4, 0.0, 0.9, 0.0, 5, 0, 0, False, 10.0)
  gan = _flag_config('--loss=gan', '--dataset=gaussians8')
  assert (gan.optimizer, gan.lr_critic, gan.lr_gen, gan.beta1, gan.beta2, gan.clip,
          gan.n_critic, gan.warmup_gen_iters, gan.boost_every, gan.critic_bn) == (
              'adam', 2e-4, 2e-4, 0.5, 0.999, 0.0, 1, 0, 0, True)
  assert gan.ngf == 512  # the dataset's preset stays
  wgan = _flag_config()
  assert (wgan.optimizer, wgan.lr_critic, wgan.clip, wgan.n_critic,
          wgan.warmup_gen_iters) == ('rmsprop', 5e-5, 0.01, 5, 25)


def test_flags_win_over_the_loss_defaults():
  config = _flag_config('--loss=wgan-gp', '--lr_gen=3e-4', '--critic_bn',
                        '--beta2=0.99', '--n_critic=2')
  assert (config.lr_critic, config.lr_gen, config.critic_bn, config.beta2,
          config.n_critic, config.optimizer) == (1e-4, 3e-4, True, 0.99, 2, 'adam')
  config = _flag_config('--loss=gan', '--optimizer=rmsprop', '--clip=0.05')
  assert (config.optimizer, config.clip, config.lr_critic) == ('rmsprop', 0.05, 2e-4)


def test_a_config_file_counts_as_explicit(tmp_path):
  path = tmp_path / 'my_config.py'
  # Built on the plain default: only the loss and beta1 are the file's own.
  path.write_text('from wgan_jax.configs import default\n'
                  'def get_config():\n'
                  '  c = default.get_config()\n'
                  '  c.loss, c.beta1, c.lr_gen = "gan", 0.3, 1e-3\n'
                  '  return c\n')
  config = _flag_config(f'--config={path}')
  assert (config.loss, config.optimizer, config.beta1, config.lr_gen,
          config.lr_critic, config.n_critic) == ('gan', 'adam', 0.3, 1e-3, 2e-4, 1)
  # --config.FIELD is the file's too; a --loss flag replaces the file's loss
  # defaults but not what the file set.
  config = _flag_config(f'--config={path}', '--config.lr_critic=0.002',
                        '--loss=wgan-gp')
  assert (config.loss, config.beta1, config.beta2, config.lr_gen,
          config.lr_critic, config.critic_bn) == ('wgan-gp', 0.3, 0.9, 1e-3, 0.002,
                                                  False)
  # Built on another loss's defaults: those are not the file's own choices.
  path.write_text('from wgan_jax import configs\n'
                  'def get_config():\n'
                  '  return configs.get_config("swissroll", loss="gan")\n')
  config = _flag_config(f'--config={path}', '--loss=wgan-gp')
  assert (config.dataset, config.lr_gen, config.beta1, config.n_critic) == (
      'swissroll', 1e-4, 0.0, 5)
  config = _flag_config(f'--config={path}')
  assert (config.loss, config.lr_gen, config.n_critic) == ('gan', 2e-4, 1)


def test_help_says_what_each_loss_sets():
  flag_values = flags.FlagValues()
  cli.define_config_flags(flag_values)
  assert '(default: 0.01). --loss=wgan-gp and gan set 0.0.' in flag_values['clip'].help
  assert '--loss=wgan-gp sets 0.0001. --loss=gan sets 0.0002.' in \
      flag_values['lr_gen'].help
  for text in ('wgan-gp: optimizer=adam', 'beta2=0.9', 'gan: optimizer=adam'):
    assert text in flag_values['loss'].help
  assert 'seed_<seed>' in flag_values['num_seeds'].help


@pytest.mark.parametrize('overrides, message', [
    (dict(loss='lsgan'), "--loss='lsgan': choose wgan, wgan-gp, gan"),
    (dict(gp_weight=-1.0), '--gp_weight=-1.0: must not be negative'),
    (dict(num_seeds=0), '--num_seeds=0: must be at least 1'),
])
def test_bad_loss_settings_are_user_errors(overrides, message, tiny_config):
  with pytest.raises(UserError) as info:
    configs.validate(tiny_config(**overrides))
  assert message in str(info.value)


def test_every_field_has_a_flag_with_its_comment_as_help():
  flag_values = flags.FlagValues()
  cli.define_config_flags(flag_values)
  helps = configs.field_help()
  for name, value in configs.default.get_config().items():
    assert helps[name], name
    assert flag_values[name].default is None  # given or not: .present tells
    assert helps[name].rstrip('.') in flag_values[name].help
    kind = {bool: 'bool', int: 'int', float: 'float', str: 'string'}[type(value)]
    assert flag_values[name].flag_type() == kind, name


def test_train_and_the_factories_share_one_validator():
  assert train.validate is configs.validate
  config = configs.get_config()
  config.generator = 'gan'
  with pytest.raises(UserError, match="--generator='gan': choose dcgan or mlp"):
    configs.validate(config)
  from wgan_jax import models  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match="--generator='gan': choose dcgan or mlp"):
    models.make_generator(config, (16, 16, 1))
