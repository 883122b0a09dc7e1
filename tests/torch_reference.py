"""A PyTorch port of the reference WGAN models, used as a test oracle.

It follows the original code's DCGAN_G / DCGAN_D (and their no-BatchNorm
variants), MLP_G / MLP_D and weights_init layer by layer, with the original
module names (``initial:100-512:convt``, ``pyramid:512-256:convt``, ...), so
a ``state_dict`` of these modules has the keys of the reference's saved
checkpoints. Differences from the original that do not change the maths:
``nn.Module`` instead of the removed ``nn.Container``, no ``data_parallel``,
and the critic returns per-example scores (the original returns their mean).
"""

from __future__ import annotations

import torch
from torch import nn


def weights_init(m: nn.Module) -> None:
  classname = m.__class__.__name__
  if classname.find('Conv') != -1:
    m.weight.data.normal_(0.0, 0.02)
  elif classname.find('BatchNorm') != -1:
    m.weight.data.normal_(1.0, 0.02)
    m.bias.data.fill_(0)


class DCGAN_D(nn.Module):  # pylint: disable=invalid-name
  def __init__(self, isize, nz, nc, ndf, n_extra_layers=0, use_bn=True):
    super().__init__()
    assert isize % 16 == 0, 'isize has to be a multiple of 16'
    main = nn.Sequential()
    main.add_module(f'initial:{nc}-{ndf}:conv',
                    nn.Conv2d(nc, ndf, 4, 2, 1, bias=False))
    main.add_module(f'initial:{ndf}:relu', nn.LeakyReLU(0.2, inplace=True))
    csize, cndf = isize / 2, ndf
    for t in range(n_extra_layers):
      main.add_module(f'extra-layers-{t}:{cndf}:conv',
                      nn.Conv2d(cndf, cndf, 3, 1, 1, bias=False))
      if use_bn:
        main.add_module(f'extra-layers-{t}:{cndf}:batchnorm', nn.BatchNorm2d(cndf))
      main.add_module(f'extra-layers-{t}:{cndf}:relu',
                      nn.LeakyReLU(0.2, inplace=True))
    while csize > 4:
      in_feat, out_feat = cndf, cndf * 2
      main.add_module(f'pyramid:{in_feat}-{out_feat}:conv',
                      nn.Conv2d(in_feat, out_feat, 4, 2, 1, bias=False))
      if use_bn:
        main.add_module(f'pyramid:{out_feat}:batchnorm', nn.BatchNorm2d(out_feat))
      main.add_module(f'pyramid:{out_feat}:relu', nn.LeakyReLU(0.2, inplace=True))
      cndf, csize = cndf * 2, csize / 2
    main.add_module(f'final:{cndf}-1:conv', nn.Conv2d(cndf, 1, 4, 1, 0, bias=False))
    self.main = main

  def forward(self, x):
    return self.main(x).view(-1)


class DCGAN_G(nn.Module):  # pylint: disable=invalid-name
  def __init__(self, isize, nz, nc, ngf, n_extra_layers=0, use_bn=True):
    super().__init__()
    assert isize % 16 == 0, 'isize has to be a multiple of 16'
    cngf, tisize = ngf // 2, 4
    while tisize != isize:
      cngf, tisize = cngf * 2, tisize * 2
    main = nn.Sequential()
    main.add_module(f'initial:{nz}-{cngf}:convt',
                    nn.ConvTranspose2d(nz, cngf, 4, 1, 0, bias=False))
    if use_bn:
      main.add_module(f'initial:{cngf}:batchnorm', nn.BatchNorm2d(cngf))
    main.add_module(f'initial:{cngf}:relu', nn.ReLU(True))
    csize = 4
    while csize < isize // 2:
      main.add_module(f'pyramid:{cngf}-{cngf // 2}:convt',
                      nn.ConvTranspose2d(cngf, cngf // 2, 4, 2, 1, bias=False))
      if use_bn:
        main.add_module(f'pyramid:{cngf // 2}:batchnorm', nn.BatchNorm2d(cngf // 2))
      main.add_module(f'pyramid:{cngf // 2}:relu', nn.ReLU(True))
      cngf, csize = cngf // 2, csize * 2
    for t in range(n_extra_layers):
      main.add_module(f'extra-layers-{t}:{cngf}:conv',
                      nn.Conv2d(cngf, cngf, 3, 1, 1, bias=False))
      if use_bn:
        main.add_module(f'extra-layers-{t}:{cngf}:batchnorm', nn.BatchNorm2d(cngf))
      main.add_module(f'extra-layers-{t}:{cngf}:relu', nn.ReLU(True))
    main.add_module(f'final:{cngf}-{nc}:convt',
                    nn.ConvTranspose2d(cngf, nc, 4, 2, 1, bias=False))
    main.add_module(f'final:{nc}:tanh', nn.Tanh())
    self.main = main

  def forward(self, z):
    return self.main(z.view(z.shape[0], z.shape[1], 1, 1))


class MLP_G(nn.Module):  # pylint: disable=invalid-name
  def __init__(self, isize, nz, nc, ngf):
    super().__init__()
    self.main = nn.Sequential(
        nn.Linear(nz, ngf), nn.ReLU(True),
        nn.Linear(ngf, ngf), nn.ReLU(True),
        nn.Linear(ngf, ngf), nn.ReLU(True),
        nn.Linear(ngf, nc * isize * isize))
    self.nc, self.isize = nc, isize

  def forward(self, z):
    out = self.main(z.view(z.shape[0], -1))
    return out.view(out.shape[0], self.nc, self.isize, self.isize)


class MLP_D(nn.Module):  # pylint: disable=invalid-name
  def __init__(self, isize, nz, nc, ndf):
    super().__init__()
    self.main = nn.Sequential(
        nn.Linear(nc * isize * isize, ndf), nn.ReLU(True),
        nn.Linear(ndf, ndf), nn.ReLU(True),
        nn.Linear(ndf, ndf), nn.ReLU(True),
        nn.Linear(ndf, 1))

  def forward(self, x):
    return self.main(x.reshape(x.shape[0], -1)).view(-1)


def count_parameters(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())


def count_buffers(module: nn.Module) -> int:
  """Running means and variances (num_batches_tracked has no Flax counterpart)."""
  return sum(b.numel() for name, b in module.named_buffers()
             if not name.endswith('num_batches_tracked'))

