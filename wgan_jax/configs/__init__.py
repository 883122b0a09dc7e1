"""Configs: ``default.get_config()`` plus a few per-dataset overrides.

``python -m wgan_jax.train --dataset=NAME`` starts from the default config,
applies ``PRESETS[NAME]`` (if any), then the command-line flags. A ``--config``
file replaces the first two steps.
"""

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
    'gaussians8': _TOY,
    'gaussians25': _TOY,
    'swissroll': _TOY,
    'celeb_a': _CELEB_A,
    'cifar10': _SMALL,
    'mnist': _SMALL,
    'fashion_mnist': _SMALL,
}


def get_config(dataset: str | None = None) -> ml_collections.ConfigDict:
  """The default config with the preset for ``dataset`` applied."""
  config = default.get_config()
  if dataset is not None:
    config.dataset = dataset
  with config.ignore_type():
    config.update(PRESETS.get(config.dataset, {}))
  return config
