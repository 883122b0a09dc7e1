"""experiments/wgan_colab.ipynb runs top to bottom, headless, on the CPU."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = os.path.join(os.path.dirname(__file__), os.pardir, 'experiments',
                        'wgan_colab.ipynb')


def test_notebook_is_stored_without_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  for cell in nb.cells:
    if cell.cell_type == 'code':
      assert not cell.outputs and cell.execution_count is None


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_with_the_tiny_setting(tmp_path, monkeypatch):
  # The kernel inherits the environment: one CPU device, the tiny setting.
  monkeypatch.setenv('WGAN_NOTEBOOK_TINY', '1')
  monkeypatch.setenv('WGAN_NOTEBOOK_WORKDIR', str(tmp_path / 'digits'))
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = NotebookClient(nb, timeout=300, kernel_name='python3',
                          resources={'metadata': {'path': os.path.dirname(NOTEBOOK)}})
  client.execute()  # raises CellExecutionError, naming the cell, if one fails
  text = '\n'.join(out.get('text', '') for cell in nb.cells if cell.cell_type == 'code'
                   for out in cell.outputs)
  assert 'generator iteration 6 of 6' in text
  assert 'Skipped: CelebA training' in text
  images = [out for cell in nb.cells if cell.cell_type == 'code' for out in cell.outputs
            if 'image/png' in out.get('data', {})]
  assert len(images) >= 3  # the live grid and curve, the generated grid
  assert (tmp_path / 'digits' / 'generated.png').exists()
