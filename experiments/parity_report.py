r"""The largest deviation from the reference PyTorch code, for each parity test.

  python experiments/parity_report.py            # from the repository root

Runs the comparisons of ``tests/reference/test_parity.py`` (``wgan_jax/reference/parity.py``) and
prints, for each, the largest deviation max|ours - reference| / max|reference|
over the arrays it compares, and which array it was; writes them all to
``--out``/parity.json with the machine. Three further groups put those
figures in context:

* bfloat16: the same comparisons with our nets computing in bfloat16
  (``--compute_dtype=bfloat16``; parameters and optimiser states float32);
* noise floor: the reference against itself, its initial weights moved by
  one float32 rounding step (x (1 +- 2^-23)), the largest over 20 such moves:
  how much the training dynamics amplify rounding alone (a near-tie in the
  inputs shows here as 0.1, ``parity.SEED``);
* float64: each float32 training run, ours and the reference's, against the
  reference in float64 on the same inputs (the exact arithmetic both round);
* near-ties: the noise floor of the reference's settings from seeds 0, 1 and
  3 over 40 moves, and ours with the Winograd critic from seed 0 against the
  float64 reference (why the comparisons start from ``parity.SEED``);
* sensitivity: ours against a reference that differs on purpose (learning
  rate 1% higher; clipping at the other time): what a real difference looks
  like through the same comparison.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags

from wgan_jax import runtime
from wgan_jax.reference import parity

_OUT = flags.DEFINE_string('out', 'experiments/results', 'Where parity.json goes.')

SCHEDULE = parity.SCHEDULE
MLP = parity.MLP
FORWARD = {
    'dcgan16': dict(image_size=16),
    'dcgan32': dict(image_size=32),
    'dcgan64': dict(image_size=64, ngf=4, ndf=4),
    'dcgan32-extra2': dict(image_size=32, n_extra_layers=2),
    'dcgan32-nobn': dict(image_size=32, no_bn=True, critic_bn=False, n_extra_layers=1),
    'mlp16': dict(image_size=16, **MLP),
    'mlp32': dict(image_size=32, **MLP),
    'mlp64': dict(image_size=64, **MLP),
    'mlp-points': dict(dataset='gaussians8', nz=2, **MLP),
}
TRAINING = {
    'dcgan, clip before (reference settings)': dict(n_extra_layers=1, **SCHEDULE),
    'dcgan, clip after (both sides)': dict(clip_when='after', **SCHEDULE),
    'dcgan + extra layer, clip after': dict(clip_when='after', n_extra_layers=1,
                                            **SCHEDULE),
    'mlp, rmsprop': dict(optimizer='rmsprop', clip=0.1, **MLP, **SCHEDULE),
    'mlp, adam': dict(optimizer='adam', clip=0.1, **MLP, **SCHEDULE),
}
ITERATION = dict(clip=0.1, **MLP, **SCHEDULE)
PERTURBATIONS = 20
TIE_PERTURBATIONS = 40


def _summary(result: dict) -> dict:
  values = {k: v for k, v in result.items() if k not in parity.BOOKKEEPING}
  worst = max(values, key=values.get)
  return {'largest': values[worst], 'where': worst, 'all': values,
          **({'steps': list(result['steps'])} if 'steps' in result else {})}


def _line(name: str, summary: dict) -> None:
  print(f'  {name:44s} {summary["largest"]:9.2e}  ({summary["where"]})', flush=True)


def main(argv):
  del argv
  report = {'machine': runtime.machine(devices=True), 'measure': 'max|ours - reference| / '
            'max|reference| per array; the largest over the arrays compared',
            'forward': {}, 'training': {}, 'bfloat16': {}, 'noise_floor': {},
            'float64': {}, 'near_ties': {}, 'sensitivity': {}}
  t0 = time.perf_counter()
  print(f'Forward passes (tolerance {parity.FORWARD_TOL:.0e}):')
  for name, overrides in FORWARD.items():
    report['forward'][name] = _summary(parity.forward_deviations(
        parity.make_config(**overrides)))
    _line(name, report['forward'][name])

  print(f'Training, 30 critic + 6 generator steps (tolerance {parity.TRAIN_TOL:.0e}):')
  for name, overrides in TRAINING.items():
    result = parity.train_side_by_side(parity.make_config(**overrides), float64=True)
    report['training'][name] = _summary(result)
    report['float64'][name] = result['float64']
    _line(name, report['training'][name])
  name = 'mlp, parallel.TrainIteration on 1 device'
  report['training'][name] = _summary(parity.train_iteration_side_by_side(
      parity.make_config(**ITERATION), num_gen_iters=3))
  _line(name, report['training'][name])

  print('bfloat16 compute (--compute_dtype=bfloat16) against the float32 reference:')
  for name in ('dcgan16', 'dcgan32', 'dcgan64', 'mlp32'):
    key = f'forward {name}'
    report['bfloat16'][key] = _summary(parity.forward_deviations(
        parity.make_config(compute_dtype='bfloat16', **FORWARD[name])))
    _line(key, report['bfloat16'][key])
  for name, overrides in TRAINING.items():
    key = f'training {name}'
    report['bfloat16'][key] = _summary(parity.train_side_by_side(
        parity.make_config(compute_dtype='bfloat16', **overrides)))
    _line(key, report['bfloat16'][key])

  print(f'Noise floor: the reference against itself, initial weights x (1 +- 2^-23), '
        f'the largest over {PERTURBATIONS} such:')
  for name, overrides in TRAINING.items():
    report['noise_floor'][name] = _summary(parity.reference_noise_floor(
        parity.make_config(**overrides), perturbations=PERTURBATIONS))
    _line(name, report['noise_floor'][name])

  print('float64: each float32 run against the reference in float64 (ours, reference):')
  for name, distances in report['float64'].items():
    print(f'  {name:44s} {distances["ours"]:9.2e}  {distances["reference"]:9.2e}', flush=True)

  base = TRAINING['dcgan, clip before (reference settings)']
  config = parity.make_config(**base)
  print(f'Near-ties: the reference\'s settings, the noise floor over {TIE_PERTURBATIONS} moves:')
  for seed in (0, 1, 3):
    name = f'seed {seed}'
    report['near_ties'][name] = _summary(parity.reference_noise_floor(
        config, seed=seed, perturbations=TIE_PERTURBATIONS))
    _line(name, report['near_ties'][name])
  name = 'ours with --conv_impl=winograd, seed 0, from float64'
  report['near_ties'][name] = parity.train_side_by_side(
      parity.make_config(conv_impl='winograd', **base), seed=0, float64=True)['float64']
  print(f'  {name:44s} {report["near_ties"][name]["ours"]:9.2e}', flush=True)

  print('Sensitivity: ours against a reference that differs on purpose:')
  for name, oracle in (
      ('reference lr_critic 1% higher', parity.make_config(**{
          **base, 'lr_critic': 1.01 * config.lr_critic})),
      ('reference lr_gen 1% higher', parity.make_config(**{
          **base, 'lr_gen': 1.01 * config.lr_gen})),
      ('reference clips after, ours before', parity.make_config(**{
          **base, 'clip_when': 'after'}))):
    report['sensitivity'][name] = _summary(parity.train_side_by_side(
        config, oracle_config=oracle))
    _line(name, report['sensitivity'][name])

  report['seconds'] = round(time.perf_counter() - t0, 1)
  os.makedirs(_OUT.value, exist_ok=True)
  path = os.path.join(_OUT.value, 'parity.json')
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(report, f, indent=2)
  print(f'{runtime.machine_text(report["machine"])}; {report["seconds"]} s. Written to {path}.')


if __name__ == '__main__':
  app.run(main)
