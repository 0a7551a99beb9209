"""Straightforward re-implementations of the *published* layers, used as oracles in the tests and
as the "reference" side of the benchmarks. They follow the papers' public code semantics operation
by operation (no fusion, no shortcuts) and are deliberately independent of ``convzoo_mm.layers``.
"""
from typing import List

import pywt
import torch
import torch.nn as nn
import torch.nn.functional as F


def published_wavelet_filters(wt_type: str, channels: int, dtype=torch.float32):
    """Analysis / synthesis filters of the published WTConv, repeated per channel: (4C, 1, L, L).

    Band order LL, high-along-rows, high-along-columns, HH; analysis uses the reversed
    decomposition filters (correlation), synthesis the reconstruction filters.
    """
    w = pywt.Wavelet(wt_type)
    lo_d = torch.tensor(w.dec_lo[::-1], dtype=dtype)
    hi_d = torch.tensor(w.dec_hi[::-1], dtype=dtype)
    lo_r = torch.tensor(w.rec_lo, dtype=dtype)
    hi_r = torch.tensor(w.rec_hi, dtype=dtype)

    def bank(lo, hi):  # element [i, j] = row_filter[i] * col_filter[j]
        return torch.stack([torch.outer(lo, lo), torch.outer(hi, lo),
                            torch.outer(lo, hi), torch.outer(hi, hi)])

    return (bank(lo_d, hi_d)[:, None].repeat(channels, 1, 1, 1),
            bank(lo_r, hi_r)[:, None].repeat(channels, 1, 1, 1))


class PublishedWTConv2d(nn.Module):
    """The published depthwise WTConv2d (Finder et al., ECCV 2024), written out plainly.

    Same parameters and state-dict names as the authors' layer (``base_conv``, ``base_scale``,
    ``wavelet_convs.{i}``, ``wavelet_scale.{i}``, frozen ``wt_filter`` / ``iwt_filter`` and, at
    stride > 1, the frozen ones ``stride_filter`` (C, 1, 1, 1) of its strided 1x1 conv).
    """

    def __init__(self, channels: int, kernel_size: int = 5, stride: int = 1, bias: bool = True,
                 wt_levels: int = 1, wt_type: str = 'db1', filter_dtype=torch.float32):
        super().__init__()
        self.channels, self.stride, self.wt_levels = channels, stride, wt_levels
        dec, rec = published_wavelet_filters(wt_type, channels, filter_dtype)
        self.wt_filter = nn.Parameter(dec, requires_grad=False)
        self.iwt_filter = nn.Parameter(rec, requires_grad=False)
        self.base_conv = nn.Conv2d(channels, channels, kernel_size, padding='same',
                                   groups=channels, bias=bias)
        self.base_scale = _Scale(channels, 1.0)
        self.wavelet_convs = nn.ModuleList(
            nn.Conv2d(4 * channels, 4 * channels, kernel_size, padding='same',
                      groups=4 * channels, bias=False) for _ in range(wt_levels))
        self.wavelet_scale = nn.ModuleList(_Scale(4 * channels, 0.1) for _ in range(wt_levels))
        if stride > 1:
            self.stride_filter = nn.Parameter(torch.ones(channels, 1, 1, 1), requires_grad=False)

    def _wt(self, x):
        n, c, h, w = x.shape
        pad = self.wt_filter.shape[-1] // 2 - 1
        y = F.conv2d(x, self.wt_filter, stride=2, groups=c, padding=pad)
        return y.reshape(n, c, 4, h // 2, w // 2)

    def _iwt(self, y):
        n, c, _, h, w = y.shape
        pad = self.iwt_filter.shape[-1] // 2 - 1
        return F.conv_transpose2d(y.reshape(n, 4 * c, h, w), self.iwt_filter, stride=2,
                                  groups=c, padding=pad)

    def forward(self, x):
        lows: List[torch.Tensor] = []
        highs: List[torch.Tensor] = []
        shapes = []
        ll = x
        for i in range(self.wt_levels):
            shapes.append(ll.shape)
            if ll.shape[2] % 2 or ll.shape[3] % 2:
                ll = F.pad(ll, (0, ll.shape[3] % 2, 0, ll.shape[2] % 2))
            bands = self._wt(ll)
            ll = bands[:, :, 0]
            s = bands.shape
            filtered = self.wavelet_scale[i](
                self.wavelet_convs[i](bands.reshape(s[0], s[1] * 4, s[3], s[4]))).reshape(s)
            lows.append(filtered[:, :, 0])
            highs.append(filtered[:, :, 1:4])
        rec = 0
        for _ in range(self.wt_levels):
            low, high, shape = lows.pop(), highs.pop(), shapes.pop()
            rec = self._iwt(torch.cat([(low + rec).unsqueeze(2), high], dim=2))
            rec = rec[:, :, :shape[2], :shape[3]]
        out = self.base_scale(self.base_conv(x)) + rec
        if self.stride > 1:
            out = F.conv2d(out, self.stride_filter, stride=self.stride, groups=self.channels)
        return out


class _Scale(nn.Module):

    def __init__(self, channels: int, init: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((1, channels, 1, 1), init))

    def forward(self, x):
        return self.weight * x
