"""experiments/claims.py: the stopping rule on signals with known answers, and its summaries."""

import json
import os
import shutil
import threading
from concurrent import futures

import numpy as np
import pytest
from absl import app, flags
from absl.testing import flagsaver
from PIL import Image

from experiments import claims, claims_tables
from wgan_jax import runtime, visualize


def _rule(values):
  values = np.asarray(values, np.float64)
  window = max(1, len(values) // 20)
  return claims.flattened_at(np.arange(len(values)), visualize.median_filter(values, window), window)


def test_a_signal_that_falls_then_levels_off_flattens_at_the_knee():
  rng = np.random.default_rng(0)
  t = np.arange(2000)
  signal = 0.2 + np.exp(-t / 150.0) + 0.01 * rng.standard_normal(t.size)
  flat = _rule(signal)
  # exp(-t/150) falls below 10% of the size (0.2 + exp(-200/150) ~ 0.46) at t ~ 580.
  assert flat is not None and 450 < flat < 750


def test_a_signal_still_falling_to_the_end_has_not_flattened():
  t = np.arange(2000)
  assert _rule(0.0025 - 0.002 * t / t[-1]) is None


def test_a_wasserstein_estimate_settling_at_zero_flattens():
  # Relative to the final value alone (almost 0), this noise would never be flat.
  rng = np.random.default_rng(1)
  t = np.arange(2000)
  signal = np.exp(-t / 100.0) + 0.002 * rng.standard_normal(t.size)
  flat = _rule(signal)
  assert flat is not None and flat < 1500


def test_a_warm_up_spike_does_not_hide_a_later_drift():
  t = np.arange(2000)
  signal = np.where(t < 25, 50.0, 1.0 - 0.5 * t / t[-1])
  assert _rule(signal) is None
  assert _rule(np.where(t < 25, 50.0, 1.0)) <= 50


def test_the_last_estimate_of_a_run_does_not_unsettle_a_flat_signal():
  # A WGAN run ending on a multiple of 500 logs its last estimate after 100
  # critic steps, well above the rest; it must not move the final value.
  rng = np.random.default_rng(2)
  t = np.arange(2000)
  signal = 0.02 + np.exp(-t / 100.0) + 0.002 * rng.standard_normal(t.size)
  signal[-1] = 0.3
  window = len(t) // 20
  assert _rule(signal) is not None
  # Curves stored before the filter shrank its window at the ends: the edge
  # padded with copies of the last value, which then set the median there.
  half = window // 2
  padded = np.median(np.lib.stride_tricks.sliding_window_view(
      np.pad(signal, half, mode='edge'), 2 * half + 1), axis=1)
  assert padded[-1] > 0.1
  assert claims.flattened_at(t, padded, window) is not None
  assert claims.flattened_at(t, padded) is None  # read at its very end, it is not
  stored = {'gen_iter': t.tolist(), 'median': padded.tolist(), 'window': window}
  assert claims.at(stored, 1999) == pytest.approx(padded[1999 - half])
  assert claims.at(stored, 1000) == padded[1000]


def test_a_measure_axis_goes_logarithmic_only_when_one_run_dwarfs_the_others():
  # The mnist5k architectures: an MLP-generator GAN at FD 1.5e8 beside runs at 300.
  assert claims.y_scale([1.5e8, 1000.0, 300.0]) == 'symlog'
  assert claims.y_scale([1000.0, 300.0, 22.0]) == 'linear'
  # Measures near zero (mode KL, KID at the floor) are not thousands of times apart.
  assert claims.y_scale([2.3, 0.002]) == 'linear'
  assert claims.y_scale([5e7]) == 'linear'
  assert claims.y_scale([5e7, float('nan')]) == 'linear'


def test_a_checkpoint_without_seconds_is_left_out_of_the_seconds_curve():
  # mnist5k-adam: SIGTERM stopped seed 0 at 2,634 and seed 1 at 2,601; the clock timed 2,601.
  seeds = [{'evaluation': [{'gen_iter': 2500, 'seconds': 2298.0, 'fd': 146.0},
                           {'gen_iter': 2634, 'seconds': None, 'fd': 145.0},
                           {'gen_iter': 3000, 'seconds': 2713.0, 'fd': 132.0}]},
           {'evaluation': [{'gen_iter': 2500, 'seconds': 2298.0, 'fd': 130.0},
                           {'gen_iter': 2601, 'seconds': 2402.0, 'fd': 127.0},
                           {'gen_iter': 3000, 'seconds': 2713.0, 'fd': 116.0}]}]
  xs, mean, lo, hi = claims._band(seeds, 'fd', 'seconds')  # pylint: disable=protected-access
  np.testing.assert_array_equal(xs, [2298.0, 2713.0])
  np.testing.assert_allclose(mean, [138.0, 124.0])
  np.testing.assert_array_equal(lo, [130.0, 116.0])
  np.testing.assert_array_equal(hi, [146.0, 132.0])
  xs, mean, _, _ = claims._band(seeds, 'fd', 'gen_iter')  # pylint: disable=protected-access
  np.testing.assert_array_equal(xs, [2500, 2634, 3000])
  np.testing.assert_allclose(mean, [138.0, 136.0, 124.0])


def test_each_column_of_the_figure_stacks_its_own_measures(tmp_path, monkeypatch):
  # mode_collapse: two 2-D mixtures measured by modes, high_quality and w1
  # beside Stacked MNIST measured by modes, mode_kl, fd and kid.
  def run(dataset, measures):
    t = list(range(0, 1001, 100))
    training = {'gen_iter': t, 'median': [1.0 / (1 + i) for i in t], 'window': 1, 'flat_from': 500}
    evaluation = [{'gen_iter': i, 'seconds': float(i), **{m: 1.0 + i for m in measures}}
                  for i in (500, 1000)]
    return {'name': f'{dataset}-wgan', 'dataset': dataset,
            'seeds': [{'training': training, 'evaluation': evaluation}]}
  result = {'experiment': 'mode_collapse',
            'runs': [run('gaussians8', ['modes', 'high_quality', 'w1']),
                     run('stacked_mnist5k', ['modes', 'mode_kl', 'fd', 'kid'])]}
  plt = visualize._pyplot()  # pylint: disable=protected-access
  figures = []
  monkeypatch.setattr(plt, 'close', figures.append)
  with flagsaver.flagsaver():
    flags.FLAGS(['claims', '--experiment=mode_collapse', f'--out={tmp_path}'])
    path = claims.figure(result)
  assert os.path.exists(path)
  axes = np.asarray(figures[0].axes).reshape(5, 2)
  shown = lambda col: [ax.get_ylabel() for ax in axes[:, col] if ax.axison]  # noqa: E731
  signal = 'training signal (median, scaled)'
  assert shown(0) == [signal, 'modes', 'high_quality', 'w1']
  assert shown(1) == [signal, 'modes', 'mode_kl', 'fd', 'kid']
  # Each column's last panel carries the x axis, the shorter one's too.
  assert axes[3, 0].get_xlabel() == axes[4, 1].get_xlabel() == 'generator iterations'
  assert [t.get_text() for t in axes[3, 0].get_xticklabels() if t.get_text()]


def test_seeds_of_parts_trained_apart_are_matched_by_iteration():
  # The ring's WGAN-GP: a SIGTERM stopped the part of seeds 0-1 at 10,472 and
  # 10,473; the part of seeds 2-3 ran through; a third part is still training.
  def seed(extra, last, w1):
    its = [10000] + extra + [11000, 20000][:last]
    return {'evaluation': [{'gen_iter': t, 'seconds': float(t), 'w1': w1 + t / 1e4} for t in its]}
  seeds = [seed([10472], 2, 0.0), seed([10473], 2, 1.0), seed([], 2, 2.0), seed([], 2, 3.0)]
  xs, mean, lo, hi = claims._band(seeds, 'w1', 'gen_iter')  # pylint: disable=protected-access
  np.testing.assert_array_equal(xs, [10000, 11000, 20000])
  np.testing.assert_allclose(mean, [2.5, 2.6, 3.5])
  np.testing.assert_allclose(lo, [1.0, 1.1, 2.0])
  np.testing.assert_allclose(hi, [4.0, 4.1, 5.0])
  xs, mean, _, _ = claims._band(seeds + [seed([], 1, 4.0)], 'w1', 'gen_iter')  # pylint: disable=protected-access
  np.testing.assert_array_equal(xs, [10000, 11000])
  np.testing.assert_allclose(mean, [3.0, 3.1])


def test_the_tables_read_each_seed_at_its_own_nearest_checkpoint():
  def seed(its, w1):
    return {'evaluation': [{'gen_iter': t, 'seconds': float(t), 'w1': w1} for t in its]}
  run = {'name': 'gaussians8-wgan-gp', 'summary': {'w1': {}}, 'settings': {'num_gen_iters': 20000},
         'seeds': [seed([1000, 2000, 5000, 10000, 10472, 15000, 20000], 1.0),
                   seed([1000, 2000, 5000, 10000, 15000, 20000], 3.0)]}
  row = claims_tables.curves({'runs': [run]}).splitlines()[4]
  assert row == ('| gaussians8-wgan-gp | 2 at 1,000 (1,000 s) | 2 at 2,000 (2,000 s) | 2 at 5,000 (5,000 s) '
                 '| 2 at 10,000 (10,000 s) | 2 at 15,000 (15,000 s) | 2 at 20,000 (20,000 s) |')


def test_a_correlation_with_a_constant_measure_reads_n_a_not_nan():
  evaluation = [{'gen_iter': t, 'modes': 10, 'fd': 100.0 / t} for t in (1000, 2000, 3000)]
  training = {'gen_iter': [1000, 2000, 3000], 'median': [3.0, 2.0, 1.0], 'flat_from': None}
  seeds = [{'training': training, 'evaluation': evaluation}]
  run = {'name': 'mnist5k-wgan', 'dataset': 'mnist5k', 'settings': {'num_gen_iters': 3000},
         'seeds': seeds, 'summary': claims.summary(seeds), 'train_seconds': 9.0}
  text = claims_tables.table({'runs': [run], 'machine': runtime.machine()})
  row = text.splitlines()[2].split(' | ')
  assert 'n/a' in row and '+1.00' in row and 'nan' not in text.replace('n/a', '')
  assert 'no ranks to correlate' in text


def test_the_tables_write_thousands_out():
  # Stacked MNIST's GAN: 999.5 modes over two seeds read "1e+03" before.
  evaluation = [{'gen_iter': t, 'modes': m, 'fd': fd} for t, m, fd in
                [(500, 227.0, 3004.0), (1000, 999.5, 148.2)]]
  training = {'gen_iter': [500, 1000], 'median': [2.0, 1.0], 'flat_from': None}
  seeds = [{'training': training, 'evaluation': evaluation}]
  run = {'name': 'stacked_mnist5k-gan', 'dataset': 'stacked_mnist5k',
         'settings': {'num_gen_iters': 1000}, 'seeds': seeds, 'summary': claims.summary(seeds),
         'train_seconds': 9.0}
  text = claims_tables.table({'runs': [run], 'machine': runtime.machine()})
  assert '| 1,000 ± 0 |' in text and 'e+' not in text
  assert '| 3,000 at 500 |' in claims_tables.curves({'runs': [run]})
  assert claims_tables._num(6.52e7) == '6.52e+07'  # pylint: disable=protected-access
  assert claims_tables._num(0.1436) == '0.144'  # pylint: disable=protected-access
  assert claims_tables._num(127.0, 2) == '130'  # pylint: disable=protected-access
  assert claims_tables._num(2.34, 2) == '2.3'  # pylint: disable=protected-access


def test_summarize_applies_the_rule_again_to_a_stored_run():
  t = list(range(200))
  falling = {'gen_iter': t, 'median': [1.0 - 0.9 * i / 199 for i in t], 'flat_from': 0}
  result = {'seeds': [{'training': falling, 'evaluation': [{'gen_iter': 199, 'w1': 0.1}]}]}
  ruled = claims.ruled(result)
  assert ruled['seeds'][0]['training']['flat_from'] is None
  assert ruled['summary']['flat_from'] == [None]
  assert ruled['summary']['w1']['mean'] == 0.1


def test_a_summary_rebuilt_from_a_stored_one_reads_the_same():
  # The grid's WGAN-GP: a noisy estimate whose Spearman with W1 moved from
  # +0.25 to +0.41 when read off the ~200 stored points instead of all 20,000.
  rng = np.random.default_rng(3)
  t = np.arange(1, 20001)
  raw = 0.5 + np.exp(-t / 3000.0) + 0.3 * rng.standard_normal(t.size)
  window = 1001
  median = visualize.median_filter(raw, window)
  evaluation = [{'gen_iter': int(i), 'w1': float(rng.uniform(0.5, 2.0))}
                for i in range(1000, 20001, 1000)]
  training = {'gen_iter': t.tolist(), 'median': median.tolist(), 'window': window}
  run = claims.ruled({'name': 'gaussians25-wgan-gp', 'seeds': [
      {'training': training, 'evaluation': evaluation}]})
  fresh = run['summary']
  stored = json.loads(json.dumps(claims.thinned({'runs': [run]})['runs'][0]))
  assert len(stored['seeds'][0]['training']['gen_iter']) < 260
  again = claims.ruled(stored, stored=True)['summary']
  assert fresh['flat_from'] == again['flat_from'] and fresh['flat_from'][0] is not None
  np.testing.assert_allclose(again['spearman_w1'], fresh['spearman_w1'], atol=1e-12)
  # A seed ruled by an older version of the rule is ruled again, off the points it has.
  del stored['seeds'][0]['training']['rule']
  stored['seeds'][0]['training']['flat_from'] = 1
  assert claims.ruled(stored, stored=True)['summary']['flat_from'][0] not in (1, None)
  # A run still training is measured off its full curve, by this version too.
  records = [{'gen_iter': i, 'wasserstein': 1.0 / i} for i in range(1, 101)]
  assert claims.curve(records)['rule'] == claims.RULE


def test_a_shared_run_has_the_settings_of_the_run_it_reads():
  for (experiment, name), (from_experiment, from_name) in claims.SAME_AS.items():
    assert name in claims.RUNS[experiment] and from_name in claims.RUNS[from_experiment]
    assert claims.source(experiment, name) == (from_experiment, from_name)
    mine, theirs = (claims.run_config(*claims.RUNS[e][n]) for e, n in
                    ((experiment, name), (from_experiment, from_name)))
    assert claims.settings(mine) == claims.settings(theirs), (experiment, name)
  assert claims.source('mode_collapse', 'gaussians8-gan') == ('mode_collapse', 'gaussians8-gan')


def _stored_run(name, dataset, workdir):
  evaluation = [{'gen_iter': it, 'modes': modes, 'high_quality': 0.5, 'w1': w1, 'w1_floor': 0.07,
                 'seconds': float(it)} for it, modes, w1 in ((100, 6.0, 0.4), (200, 7.0, 0.3),
                                                             (300, 8.0, 0.2))]
  training = {'key': 'wasserstein', 'gen_iter': list(range(1, 301)),
              'median': [1.0 / i for i in range(1, 301)], 'window': 15, 'flat_from': 50}
  settings = claims.settings(claims.run_config(*claims.RUNS['loss_meaning'][name]))
  return {'name': name, 'dataset': dataset, 'settings': settings, 'train_seconds': 300.0,
          'reached': 300, 'machine': runtime.machine(), 'sessions': [],
          'seeds': [{'workdir': workdir, 'evaluation': evaluation, 'training': training}],
          'summary': {}}


def test_a_summary_keeps_the_runs_whose_workdirs_are_elsewhere(tmp_path, capsys):
  # One run trained here (its workdir holds a grid), one in an earlier session
  # (only the summary already in --out has it): the new summary has both, and
  # a grid copy for each that a later summary without the workdirs shows.
  out, workdirs = tmp_path / 'out', tmp_path / 'runs'
  here = workdirs / 'mode_collapse' / 'gaussians8-gan'
  (here / 'samples').mkdir(parents=True)
  Image.new('RGB', (8, 8), (255, 0, 0)).save(here / 'samples' / 'scatter_000300.png')
  (here / claims.RUN_FILE).write_text(json.dumps(
      _stored_run('gaussians8-gan', 'gaussians8', str(here))))
  out.mkdir()
  (out / 'loss_meaning.json').write_text(json.dumps({'runs': [
      _stored_run('gaussians8-wgan', 'gaussians8', '/gone/seed_0')]}))
  with flagsaver.flagsaver():
    flags.FLAGS(['claims', '--experiment=loss_meaning', '--summarize_only', f'--out={out}',
                 f'--workdirs={workdirs}'])
    claims.main([])
    summary = json.loads((out / 'loss_meaning.json').read_text())
    assert [r['name'] for r in summary['runs']] == ['gaussians8-wgan', 'gaussians8-gan']
    assert summary['runs'][0]['seeds'][0]['evaluation'][-1]['w1'] == 0.2
    # The stored run's rule is applied again: 1/i is within 10% of 1/293 from 151 on.
    assert summary['runs'][0]['summary']['flat_from'] == [151]
    assert os.listdir(out / 'grids') == ['gaussians8-gan.png']

    shutil.rmtree(workdirs)
    workdirs.mkdir()
    claims.main([])
    summary = json.loads((out / 'loss_meaning.json').read_text())
    assert [r['name'] for r in summary['runs']] == ['gaussians8-wgan', 'gaussians8-gan']
    assert claims.final_grid(summary['runs'][1], 'loss_meaning') == str(
        out / 'grids' / 'gaussians8-gan.png')
    assert claims.final_grid(summary['runs'][0], 'loss_meaning') is None
    # The optimisers' RMSProp arm is the loss experiment's MNIST WGAN: one copy, under that name.
    (out / 'grids' / 'mnist5k-wgan.png').write_bytes(b'png')
    rmsprop = {'name': 'mnist5k-rmsprop', 'seeds': [{'workdir': '/gone/seed_0'}]}
    assert claims.final_grid(rmsprop, 'optimizers') == str(out / 'grids' / 'mnist5k-wgan.png')
    assert sorted(os.listdir(out / 'grids')) == ['gaussians8-gan.png', 'mnist5k-wgan.png']
    assert 'gaussians8-gan' in capsys.readouterr().out

    # A seed trained later, in a part of its own, leaves the first seed's copy as it is.
    later = tmp_path / 'seeds_1-2'
    (later / 'samples').mkdir(parents=True)
    Image.new('RGB', (8, 8), (0, 0, 255)).save(later / 'samples' / 'scatter_000300.png')
    two_seeds = {'name': 'gaussians8-gan', 'seeds': [{'workdir': '/gone/seed_0'}, {'workdir': str(later)}]}
    assert claims.final_grid(two_seeds, 'loss_meaning') == str(out / 'grids' / 'gaussians8-gan.png')
    assert Image.open(out / 'grids' / 'gaussians8-gan.png').getpixel((0, 0))[:3] == (255, 0, 0)
    (out / 'grids' / 'gaussians8-gan.png').unlink()
    claims.final_grid(two_seeds, 'loss_meaning')
    assert Image.open(out / 'grids' / 'gaussians8-gan.png').getpixel((0, 0))[:3] == (0, 0, 255)


def test_a_part_is_some_seeds_of_the_run():
  config = claims.run_config(*claims.RUNS['mode_collapse']['gaussians8-gan'])
  part, where = claims.part_config(config, '1:3')
  assert (part.seed, part.num_seeds, where) == (config.seed + 1, 2, 'seeds_1-3')
  assert claims.part_config(config, '0:5') == (config, '')
  assert claims.part_config(config, '') == (config, '')
  for bad in ('3:9', '2:2', 'two'):
    with pytest.raises(app.UsageError, match='--seeds='):
      claims.part_config(config, bad)


def _with_seeds(run, numbers, last_iter=300, **settings):
  run = json.loads(json.dumps(run))
  seed = run['seeds'][0]
  run['seeds'] = [{**seed, 'seed': n, 'workdir': f'/elsewhere/seed_{n}',
                   'evaluation': [e for e in seed['evaluation'] if e['gen_iter'] <= last_iter]}
                  for n in numbers]
  run['settings'].update(seed=numbers[0], num_seeds=len(numbers), **settings)
  run['reached'] = last_iter
  return run


def test_parts_trained_apart_merge_into_the_run():
  config = claims.run_config(*claims.RUNS['loss_meaning']['gaussians8-wgan'])
  base = _stored_run('gaussians8-wgan', 'gaussians8', '/gone')
  earlier = _with_seeds(base, [0, 1])
  del earlier['seeds'][0]['seed'], earlier['seeds'][1]['seed']  # numbered by their workdirs
  parts = [earlier, _with_seeds(base, [2, 3, 4]),
           _with_seeds(base, [1], last_iter=200),  # less far than the earlier seed 1
           _with_seeds(base, [0], lr_critic=1.0)]  # other settings: not this run
  run = claims.merged('gaussians8-wgan', config, parts)
  assert [s['seed'] for s in run['seeds']] == [0, 1, 2, 3, 4]
  assert [s['evaluation'][-1]['gen_iter'] for s in run['seeds']] == [300] * 5
  assert [p['seeds'] for p in run['parts']] == [[0, 1], [2, 3, 4]]
  assert run['train_seconds'] == 600.0 and run['reached'] == 300
  assert run['settings'] == claims.settings(config)
  assert len(run['summary']['w1']['values']) == 5
  # Merged again with a new part, the parts so far stay as they were.
  again = claims.merged('gaussians8-wgan', config, [run, _with_seeds(base, [4])])
  assert [p['seeds'] for p in again['parts']] == [[0, 1], [2, 3], [4]]


def test_the_gradient_penalty_weight_tells_wgan_gp_runs_apart():
  preset, toy = (claims.run_config(*claims.RUNS['mode_collapse'][f'gaussians8-wgan-gp{v}'])
                 for v in ('', '-toy'))
  assert (preset.gp_weight, preset.beta1, toy.gp_weight, toy.beta1) == (10.0, 0.0, 0.1, 0.5)
  assert 'gp_weight' not in claims.settings(
      claims.run_config(*claims.RUNS['mode_collapse']['gaussians8-wgan']))
  base = _stored_run('gaussians8-wgan', 'gaussians8', '/gone')
  # Measured before the weight was recorded: it was the default, 10.
  before = _with_seeds(base, [0, 1])
  before['settings'] = {k: v for k, v in claims.settings(preset).items() if k != 'gp_weight'}
  assert claims.same_settings(before['settings'], preset, ignore=('seed', 'num_seeds'))
  assert not claims.same_settings(before['settings'], toy, ignore=('seed', 'num_seeds'))
  no_beta = dict(before['settings'], beta1=0.5)  # the weight alone tells the toy run apart
  assert not claims.same_settings(no_beta, toy, ignore=('seed', 'num_seeds'))
  later = _with_seeds(base, [2])
  later['settings'] = dict(claims.settings(preset), seed=2, num_seeds=1)
  run = claims.merged('gaussians8-wgan-gp', preset, [before, later])
  assert [s['seed'] for s in run['seeds']] == [0, 1, 2]
  assert run['settings']['gp_weight'] == 10.0


@pytest.mark.slow
def test_a_run_trained_in_parts_is_summarised_whole(tmp_path):
  out, workdirs = tmp_path / 'out', tmp_path / 'runs'
  common = ['claims', '--experiment=loss_meaning', '--only=gaussians8-gan', '--num_seeds=3',
            '--num_gen_iters=6', '--checkpoints=2', f'--out={out}', f'--workdirs={workdirs}',
            '--set=warmup_gen_iters=0,ngf=8,ndf=8,batch_size=16']
  with flagsaver.flagsaver():
    for part in ('0:1', '1:3'):
      flags.FLAGS(common + [f'--seeds={part}'])
      claims.main([])
    run_dir = workdirs / 'mode_collapse' / 'gaussians8-gan'
    assert sorted(os.listdir(run_dir)) == ['seeds_0-1', 'seeds_1-3']
    flags.FLAGS(common + ['--summarize_only'])
    claims.main([])
  run, = json.loads((out / 'loss_meaning.json').read_text())['runs']
  assert [s['seed'] for s in run['seeds']] == [0, 1, 2]
  assert [p['seeds'] for p in run['parts']] == [[0], [1, 2]]
  assert [[e['gen_iter'] for e in s['evaluation']] for s in run['seeds']] == [[3, 6]] * 3
  assert run['reached'] == 6 and run['settings']['num_seeds'] == 3


@pytest.mark.slow
def test_two_summaries_of_one_workdir_at_once_each_measure_it_whole(tmp_path, monkeypatch):
  # Two claims_all.sh invocations sharing WORKDIRS that end together each
  # summarise it, so both measure the same run at the same time.
  workdirs = tmp_path / 'runs'
  with flagsaver.flagsaver():
    flags.FLAGS(['claims', '--experiment=mode_collapse', '--only=gaussians8-gan', '--num_seeds=1',
                 '--num_gen_iters=6', '--checkpoints=2', f'--out={tmp_path / "out"}',
                 f'--workdirs={workdirs}', '--set=warmup_gen_iters=0,ngf=8,ndf=8,batch_size=16'])
    claims.main([])
    dataset, overrides = claims.RUNS['mode_collapse']['gaussians8-gan']
    config = claims._run_config(dataset, overrides)
  workdir = str(workdirs / 'mode_collapse' / 'gaussians8-gan')
  both_measuring = threading.Barrier(2, timeout=120)
  evaluate_alone = claims.evaluate.evaluate

  def evaluate_beside_another(*args, **kwargs):
    both_measuring.wait()
    return evaluate_alone(*args, **kwargs)

  monkeypatch.setattr(claims.evaluate, 'evaluate', evaluate_beside_another)
  with futures.ThreadPoolExecutor(2) as pool:
    runs = [f.result() for f in [pool.submit(claims.measure, 'gaussians8-gan', dataset, config,
                                             workdir) for _ in range(2)]]
  for run in runs:
    assert [e['gen_iter'] for e in run['seeds'][0]['evaluation']] == [3, 6]
  assert [f for f in os.listdir(workdir) if f.startswith('evaluation')] == ['evaluation.jsonl']
  with open(os.path.join(workdir, 'evaluation.jsonl'), encoding='utf-8') as f:
    kept = [json.loads(line) for line in f]
  # The file is one summary's measurement, whole (measure adds the clock's seconds after).
  measured = [[{k: v for k, v in e.items() if k != 'seconds'}
               for e in run['seeds'][0]['evaluation']] for run in runs]
  assert kept in measured
