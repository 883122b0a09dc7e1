"""Configs: ``default.get_config()``, per-dataset presets, per-loss defaults.

``python -m wgan_jax.train --dataset=NAME --loss=LOSS`` starts from the
default config, applies ``PRESETS[NAME]`` (if any), then
``LOSS_DEFAULTS[LOSS]``, then the command-line flags. A ``--config`` file
replaces the first two steps; the loss defaults then fill in only the fields
the file leaves as they were (``explicit_fields``), so a flag or a field the
file sets always wins over the loss's default.
"""

from __future__ import annotations

import ml_collections

from wgan_jax.configs import default

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
# digits'. Measured on the 2-core CPU: 1000 iterations (ngf = ndf = 16) do not
# yet give readable digits, 2000 barely (classifier FD 423, then 210; real
# digits 3.2), so the budget is 5000 (~20 min there at this width, estimated
# from a 100-iteration run, not yet confirmed to converge; minutes on a GPU). stacked_mnist5k: the same with 3 channels (both measured by
# wgan_jax/eval/mnist_classifier.py).
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
