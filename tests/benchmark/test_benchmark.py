"""The side-by-side benchmark and the process settings it shares with training."""

import json

import pytest

from wgan_jax import benchmark
from wgan_jax.errors import UserError


def test_variants_parse_and_refuse_mistakes():
  v = benchmark.parse_variant("fast: iteration_mode=unroll xla_flags='--a=1 --b=2'")
  assert v == benchmark.Variant('fast', 'ours', (('iteration_mode', 'unroll'),),
                                '--a=1 --b=2')
  for bad in ('no colon', 'torch: iteration_mode=scan', 'x: iteration_mode'):
    with pytest.raises(UserError):
      benchmark.parse_variant(bad)


def test_both_sides_get_the_steady_state_reference_settings():
  config = benchmark.bench_config(benchmark.MODELS['mlp'], iteration_mode='unroll')
  assert (config.generator, config.critic, config.ngf, config.ndf) == ('mlp', 'mlp', 512, 512)
  assert (config.batch_size, config.n_critic, config.clip_when) == (64, 5, 'before')
  assert config.warmup_gen_iters == 0 and config.boost_every == 0  # no 100-step iterations
  assert config.iteration_mode == 'unroll'
  with pytest.raises(UserError, match='not a config field'):
    benchmark.bench_config(benchmark.MODELS['dcgan32'], fast='yes')


@pytest.mark.slow
def test_tiny_side_by_side_run_reports_every_figure(mlp_iteration_flops):
  pytest.importorskip('torch')  # the reference's side
  # MLPs: the least to compile.
  spec = dict(image_size=16, generator='mlp', critic='mlp', ngf=16, ndf=16, nz=8,
              batch_size=8)
  options = dict(repeats=2, iters=1, min_repeat_s=0, num_examples=32, backend='cpu',
                 torch_device='cpu', torch_threads=1, compilation_cache_dir='',
                 gemm_seconds=0.1)
  variants = [benchmark.Variant('torch', 'torch'), benchmark.Variant('ours', 'ours')]
  result = benchmark.benchmark_model('tiny', variants, options, log=lambda s: None,
                                     spec=spec)
  assert result['iters_per_repeat'] == 1 and len(result['load_average_1min_per_repeat']) == 2
  ours, torch = result['results']['ours'], result['results']['torch']
  for r in (ours, torch):
    assert len(r['repeat_seconds']) == 2 and r['gen_iters_per_s'] > 0
    assert r['images_per_s'] == pytest.approx(r['gen_iters_per_s'] * 5 * 8)
    assert r['peak_rss_mb'] >= r['rss_before_models_mb'] > 0
  assert torch['speedup_vs_torch'] == 1.0
  assert ours['compile_s'] > 0 and ours['compile_s_while_timed'] == 0
  assert ours['description']['backend'] == 'cpu'
  gflop = mlp_iteration_flops(8, 8, 16, 16 * 16 * 3, 5) / 1e9
  for r in (ours, torch):  # the same model FLOPs for both; each its own GEMM rate
    assert r['gflop_per_gen_iter'] == pytest.approx(gflop)
    assert r['achieved_gflops'] == pytest.approx(gflop * r['gen_iters_per_s'])
    assert r['share_of_gemm'] == pytest.approx(r['achieved_gflops'] / r['gemm_gflops'])
    assert 'share_of_spec_peak' not in r  # CPUs have no datasheet entry
  assert result['gemm_ceiling_gen_iters_per_s'] == pytest.approx(ours['gemm_gflops'] / gflop)
  assert result['gemm_ceiling_speedup_vs_torch'] == pytest.approx(
      result['gemm_ceiling_gen_iters_per_s'] / torch['gen_iters_per_s'])
  assert 'tiny: ' in benchmark.ceilings({'tiny': result})
  assert 'tiny' in benchmark.table({'tiny': result})
  json.dumps(result)


def test_datasheet_peaks_match_device_names():
  peak = benchmark.spec_peak('NVIDIA H100 80GB HBM3')
  assert peak['tf32'] == 494.7
  result = {'gemm_ceiling_gen_iters_per_s': 2.0, 'results': {'ours': {
      'framework': 'ours', 'gemm_gflops': 400e3, 'gflop_per_gen_iter': 200.0,
      'spec_peak_tflops': peak, 'share_of_spec_peak': {'tf32': 0.25}}}}
  assert '25.0% of the tf32 peak (494.7 TFLOP/s)' in benchmark.ceilings({'dcgan64': result})
  assert benchmark.spec_peak('NVIDIA H100 PCIe')['tf32'] == 378.0
  assert benchmark.spec_peak('NVIDIA H200')['bfloat16'] == 989.4
  assert benchmark.spec_peak('cpu') is None


def test_each_model_is_written_as_soon_as_it_is_measured(tmp_path, monkeypatch):
  # A run stopped at a lease's limit (here: the second model fails) keeps the first.
  def fake(model, variants, options, log):
    if model == 'dcgan64':
      raise KeyboardInterrupt
    return {'results': {'ours': {'gen_iters_per_s': 1.0}}}
  monkeypatch.setattr(benchmark, 'benchmark_model', fake)
  out = tmp_path / 'sub' / 'bench.json'
  with pytest.raises(KeyboardInterrupt):
    benchmark.run(['dcgan32', 'dcgan64'], [benchmark.Variant('ours', 'ours')], {}, out=str(out))
  written = json.loads(out.read_text())
  assert list(written['models']) == ['dcgan32'] and written['complete'] is False
  assert benchmark.run(['dcgan32'], [benchmark.Variant('ours', 'ours')], {},
                       out=str(out))['complete'] is True
  assert json.loads(out.read_text())['complete'] is True
