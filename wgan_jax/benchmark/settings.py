"""What both sides of the benchmark train: the models, the settings, the
data, and the variants of ours (``--variant``)."""

from __future__ import annotations

import dataclasses
import shlex

import numpy as np

from wgan_jax.errors import UserError

# The reference's models; 'mlp' is its MLP_G / MLP_D at the width its README
# trains them with (python main.py --mlp_G --ngf 512), on 64x64 colour images.
MODELS = {
    'mlp': dict(image_size=64, generator='mlp', critic='mlp', ngf=512, ndf=512),
    'dcgan32': dict(image_size=32),
    'dcgan64': dict(image_size=64),
}
BATCH_SIZE = 64
N_CRITIC = 5
CHANNELS = 3
GEMM_SECONDS = 3.0  # the GEMM rate is the best of this long: one slow second on a VM moves nothing

def bench_config(spec: dict, **overrides):
  """Our config for a model ``spec`` (a value of MODELS): the reference's
  defaults, the steady-state schedule, then ``overrides`` (strings allowed)."""
  from wgan_jax import configs  # pylint: disable=g-import-not-at-top
  config = configs.get_config()
  config.update(batch_size=BATCH_SIZE, nz=100, ngf=64, ndf=64, channels=CHANNELS,
                optimizer='rmsprop', lr_critic=5e-5, lr_gen=5e-5, clip=0.01,
                clip_when='before', n_critic=N_CRITIC, warmup_gen_iters=0,
                boost_every=0, progress_bar=False)
  config.update(spec)
  unknown = sorted(set(overrides) - set(config.keys()))
  if unknown:
    raise UserError(f'--variant: {", ".join(unknown)} is not a config field '
                    '(see wgan_jax/configs/default.py).')
  for key, value in overrides.items():
    config[key] = type(config[key])(value) if not isinstance(config[key], bool) \
        else str(value).lower() in ('1', 'true', 'yes')
  return config


def bench_data(spec: dict, num_examples: int, seed: int = 0) -> np.ndarray:
  """The dataset both sides train on: uint8 pixels, (N, H, W, C)."""
  size = spec['image_size']
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (num_examples, size, size, CHANNELS), dtype=np.uint8)


@dataclasses.dataclass(frozen=True)
class Variant:
  """One contender: ``torch`` (the reference) or ours with config overrides
  and XLA flags (None: the environment's, plus the package's defaults)."""
  label: str
  framework: str  # 'ours' | 'torch'
  overrides: tuple[tuple[str, str], ...] = ()
  xla_flags: str | None = None


def parse_variant(text: str) -> Variant:
  """'LABEL: field=value ... [xla_flags="--flag=v --flag2=v"]' -> a Variant of ours."""
  label, sep, rest = text.partition(':')
  label = label.strip()
  if not sep or not label or label == 'torch':
    raise UserError(f'--variant={text!r}: write LABEL: field=value ... '
                    "(e.g. 'unroll: iteration_mode=unroll'); LABEL is not 'torch'.")
  overrides, xla_flags = [], None
  for item in shlex.split(rest):
    key, eq, value = item.partition('=')
    if not eq:
      raise UserError(f'--variant={text!r}: {item!r} is not field=value.')
    if key == 'xla_flags':
      xla_flags = value
    else:
      overrides.append((key, value))
  return Variant(label, 'ours', tuple(overrides), xla_flags)
