"""A PyTorch port of pytorch-fid's FID Inception-v3, used as a test oracle.

Written from pytorch-fid's ``fid_inception_v3`` (torchvision's Inception3 with
num_classes=1008, no aux head, and the FIDInceptionA/C/E_1/E_2 blocks) without
torchvision, which does not install beside this torch. Module names are the
originals, so ``state_dict()`` has exactly the keys (and shapes) of
``pt_inception-2015-12-05-6726825d.pth``; ``randomize`` fills it with random
numbers that keep activations of order one through all 94 conv layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicConv2d(nn.Module):
  def __init__(self, cin, cout, kernel_size, stride=1, padding=0):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=False)
    self.bn = nn.BatchNorm2d(cout, eps=0.001)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


def _avg_pool_tf(x):
  return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class FIDInceptionA(nn.Module):
  def __init__(self, cin, pool_features):
    super().__init__()
    self.branch1x1 = BasicConv2d(cin, 64, 1)
    self.branch5x5_1 = BasicConv2d(cin, 48, 1)
    self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
    self.branch_pool = BasicConv2d(cin, pool_features, 1)

  def forward(self, x):
    b5 = self.branch5x5_2(self.branch5x5_1(x))
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    bp = self.branch_pool(_avg_pool_tf(x))
    return torch.cat([self.branch1x1(x), b5, b3, bp], 1)


class InceptionB(nn.Module):
  def __init__(self, cin):
    super().__init__()
    self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

  def forward(self, x):
    bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return torch.cat([self.branch3x3(x), bd, F.max_pool2d(x, 3, 2)], 1)


class FIDInceptionC(nn.Module):
  def __init__(self, cin, c7):
    super().__init__()
    row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(
        kernel_size=(7, 1), padding=(3, 0))
    self.branch1x1 = BasicConv2d(cin, 192, 1)
    self.branch7x7_1 = BasicConv2d(cin, c7, 1)
    self.branch7x7_2 = BasicConv2d(c7, c7, **row)
    self.branch7x7_3 = BasicConv2d(c7, 192, **col)
    self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
    self.branch7x7dbl_2 = BasicConv2d(c7, c7, **col)
    self.branch7x7dbl_3 = BasicConv2d(c7, c7, **row)
    self.branch7x7dbl_4 = BasicConv2d(c7, c7, **col)
    self.branch7x7dbl_5 = BasicConv2d(c7, 192, **row)
    self.branch_pool = BasicConv2d(cin, 192, 1)

  def forward(self, x):
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = x
    for i in range(1, 6):
      bd = getattr(self, f'branch7x7dbl_{i}')(bd)
    bp = self.branch_pool(_avg_pool_tf(x))
    return torch.cat([self.branch1x1(x), b7, bd, bp], 1)


class InceptionD(nn.Module):
  def __init__(self, cin):
    super().__init__()
    self.branch3x3_1 = BasicConv2d(cin, 192, 1)
    self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
    self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
    self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
    self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
    self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

  def forward(self, x):
    b3 = self.branch3x3_2(self.branch3x3_1(x))
    b7 = x
    for i in range(1, 5):
      b7 = getattr(self, f'branch7x7x3_{i}')(b7)
    return torch.cat([b3, b7, F.max_pool2d(x, 3, 2)], 1)


class FIDInceptionE(nn.Module):
  """FIDInceptionE_1 (``max_pool=False``) and FIDInceptionE_2 (``True``)."""

  def __init__(self, cin, max_pool):
    super().__init__()
    row, col = dict(kernel_size=(1, 3), padding=(0, 1)), dict(
        kernel_size=(3, 1), padding=(1, 0))
    self.max_pool = max_pool
    self.branch1x1 = BasicConv2d(cin, 320, 1)
    self.branch3x3_1 = BasicConv2d(cin, 384, 1)
    self.branch3x3_2a = BasicConv2d(384, 384, **row)
    self.branch3x3_2b = BasicConv2d(384, 384, **col)
    self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
    self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
    self.branch3x3dbl_3a = BasicConv2d(384, 384, **row)
    self.branch3x3dbl_3b = BasicConv2d(384, 384, **col)
    self.branch_pool = BasicConv2d(cin, 192, 1)

  def forward(self, x):
    b3 = self.branch3x3_1(x)
    b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
    bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
    pooled = F.max_pool2d(x, 3, 1, 1) if self.max_pool else _avg_pool_tf(x)
    return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
  """NCHW in [-1, 1] -> pool3 (N, 2048); resizes to 299 as pytorch-fid does."""

  def __init__(self, resize=True):
    super().__init__()
    self.resize = resize
    self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
    self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
    self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
    self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
    self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
    self.Mixed_5b = FIDInceptionA(192, 32)
    self.Mixed_5c = FIDInceptionA(256, 64)
    self.Mixed_5d = FIDInceptionA(288, 64)
    self.Mixed_6a = InceptionB(288)
    self.Mixed_6b = FIDInceptionC(768, 128)
    self.Mixed_6c = FIDInceptionC(768, 160)
    self.Mixed_6d = FIDInceptionC(768, 160)
    self.Mixed_6e = FIDInceptionC(768, 192)
    self.Mixed_7a = InceptionD(768)
    self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
    self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
    self.fc = nn.Linear(2048, 1008)

  def forward(self, x):
    if self.resize:
      # pytorch-fid resizes its [0, 1] input, then maps it to [-1, 1]; the
      # resize is affine-equivariant, so resizing the [-1, 1] image is the same.
      x = F.interpolate(x, size=(299, 299), mode='bilinear', align_corners=False)
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = F.max_pool2d(x, 3, 2)
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
    x = F.max_pool2d(x, 3, 2)
    for name in ('5b', '5c', '5d', '6a', '6b', '6c', '6d', '6e', '7a', '7b', '7c'):
      x = getattr(self, f'Mixed_{name}')(x)
    return x.mean((2, 3))


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
  """Random weights and BatchNorm statistics that keep activations O(1)."""
  gen = torch.Generator().manual_seed(seed)
  for m in model.modules():
    if isinstance(m, nn.Conv2d):
      fan_in = m.weight[0].numel()
      m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
    elif isinstance(m, nn.BatchNorm2d):
      n = m.num_features
      m.weight.copy_(1.0 + 0.1 * torch.randn(n, generator=gen))
      m.bias.copy_(0.1 * torch.randn(n, generator=gen))
      m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
      m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    elif isinstance(m, nn.Linear):
      m.weight.copy_(0.01 * torch.randn(m.weight.shape, generator=gen))
      m.bias.zero_()
  return model.eval()
