"""Effective receptive field (ERF) of a backbone.

Following Luo et al. (2016) and the ERF figures of RepLKNet / WTConv: for each image, the scalar
``sum over channels of ReLU(chosen output feature map at its central position)`` (RepLKNet's
choice; without the ReLU, an output that ends in a channel LayerNorm, as ConvNeXt stages do,
sums to a constant and has no gradient) is back-propagated to the input; the ERF is the
per-pixel sum over input channels of ``|d scalar / d input|``, averaged over images. The map is
shown as ``log10(erf + 1)`` normalised to [0, 1].

The spread is summarised like RepLKNet's analysis: for a threshold ``t`` (20%, 50%, 99%), the
smallest square centred on the central pixel whose contribution is at least ``t`` of the total,
reported as the fraction of the map area it covers (higher = wider ERF).
"""
import glob
import os
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['compute_erf', 'erf_area_ratios', 'plot_erfs', 'erf_image', 'save_erf_image',
           'load_images', 'smooth_random_images', 'find_images', 'IMAGE_EXTENSIONS',
           'LABEL_FOLDERS']

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')
# folders of label maps in mm dataset layouts (ADE20K/COCO-stuff, mmseg's ann_dir, Cityscapes,
# Pascal VOC), skipped by find_images
LABEL_FOLDERS = ('annotations', 'ann_dir', 'gtFine', 'gtCoarse', 'SegmentationClass',
                 'SegmentationClassAug', 'SegmentationObject', 'labels', 'masks')
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def _select_output(out, out_index: int) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        if not -len(out) <= out_index < len(out):
            raise ValueError(f'the backbone returns {len(out)} outputs; out_index must be in '
                             f'[{-len(out)}, {len(out) - 1}], got {out_index}')
        return out[out_index]
    if out_index not in (-1, 0):
        raise ValueError(f'the backbone returns one tensor; out_index must be -1 or 0, '
                         f'got {out_index}')
    return out


def compute_erf(backbone: nn.Module, images: Iterable[torch.Tensor], out_index: int = -1,
                device: str = 'cpu') -> np.ndarray:
    """Effective receptive field of ``backbone`` averaged over ``images``.

    Args:
        backbone (nn.Module): maps ``(1, 3, H, W)`` to a feature map ``(1, C, h, w)`` or a
            tuple of them (mm backbones); it is put in eval mode (BN uses running stats).
        images (iterable[Tensor]): normalised images ``(3, H, W)``, all of the same size.
        out_index (int): which output of a multi-output backbone. Defaults to -1 (the last).
        device (str): where to run.

    Returns:
        np.ndarray: ``(H, W)`` float64 map, the mean over images of ``sum_c |grad|``.
    """
    backbone.to(device)
    backbone.eval()  # not chained: mmdet/mmseg ResNet.train() returns None
    total: Optional[torch.Tensor] = None
    count = 0
    for img in images:
        x = img[None].to(device).float().requires_grad_(True)
        feat = _select_output(backbone(x), out_index)
        h, w = feat.shape[-2:]
        central = F.relu(feat[:, :, h // 2, w // 2]).sum()
        (grad, ) = torch.autograd.grad(central, x)
        contribution = grad.abs().sum(dim=1)[0].double().cpu()
        total = contribution if total is None else total + contribution
        count += 1
    if count == 0:
        raise ValueError('compute_erf needs at least one image')
    return (total / count).numpy()


def erf_area_ratios(erf: np.ndarray, thresholds: Sequence[float] = (0.2, 0.5, 0.99)
                    ) -> Dict[float, float]:
    """For each ``t``: area of the smallest centred square holding ``>= t`` of the total
    contribution, as a fraction of the map area (squares are clipped at the border)."""
    erf = np.asarray(erf, dtype=np.float64)
    h, w = erf.shape
    total = erf.sum()
    if total <= 0:
        raise ValueError('the ERF map is all zeros (no gradient reached the input)')
    cy, cx = h // 2, w // 2
    # contribution inside the square of half-size r, for every r
    sums, areas = [], []
    for r in range(max(h, w)):
        y0, y1, x0, x1 = max(cy - r, 0), min(cy + r + 1, h), max(cx - r, 0), min(cx + r + 1, w)
        sums.append(erf[y0:y1, x0:x1].sum())
        areas.append((y1 - y0) * (x1 - x0))
        if y0 == 0 and x0 == 0 and y1 == h and x1 == w:
            break
    out = {}
    for t in thresholds:
        idx = next(i for i, s in enumerate(sums) if s >= t * total * (1 - 1e-12))
        out[t] = areas[idx] / float(h * w)
    return out


def smooth_random_images(num: int, size: Union[int, Sequence[int]], seed: int = 0
                         ) -> List[torch.Tensor]:
    """``num`` random smooth images (Gaussian-blurred noise, unit variance), shape (3, H, W)."""
    h, w = (size, size) if isinstance(size, int) else size
    gen = torch.Generator().manual_seed(seed)
    k = torch.exp(-torch.arange(-6, 7, dtype=torch.float32)**2 / (2 * 2.0**2))
    k = (k / k.sum())
    images = []
    for _ in range(num):
        x = torch.randn(3, 1, h, w, generator=gen)
        x = F.conv2d(F.pad(x, (6, 6, 0, 0), mode='reflect'), k.view(1, 1, 1, -1))
        x = F.conv2d(F.pad(x, (0, 0, 6, 6), mode='reflect'), k.view(1, 1, -1, 1))
        x = x[:, 0]
        images.append((x - x.mean()) / (x.std() + 1e-8))
    return images


def find_images(folder: str) -> List[str]:
    """Image files under ``folder`` (recursive), sorted, without those inside a folder of
    label maps (``LABEL_FOLDERS``, the mm dataset layouts' annotation folders, e.g. ADE20K's
    ``annotations/``): those PNGs are class indices, nearly black as pictures. Naming such a
    folder itself keeps its files."""
    files = []
    for ext in IMAGE_EXTENSIONS:
        files += glob.glob(os.path.join(folder, '**', f'*{ext}'), recursive=True)
        files += glob.glob(os.path.join(folder, '**', f'*{ext.upper()}'), recursive=True)
    return sorted(f for f in set(files) if not set(
        os.path.normpath(os.path.relpath(os.path.dirname(f), folder)).split(os.sep))
        & set(LABEL_FOLDERS))


def load_images(paths: Sequence[str], size: Union[int, Sequence[int]],
                mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> List[torch.Tensor]:
    """Read RGB images, resize (shorter side) and centre-crop to ``size``, normalise with the
    mm data-preprocessor defaults; returns tensors (3, H, W)."""
    from PIL import Image
    h, w = (size, size) if isinstance(size, int) else size
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    out = []
    for p in paths:
        img = Image.open(p).convert('RGB')
        scale = max(h / img.height, w / img.width)
        img = img.resize((max(w, round(img.width * scale)), max(h, round(img.height * scale))),
                         Image.BILINEAR)
        left, top = (img.width - w) // 2, (img.height - h) // 2
        img = img.crop((left, top, left + w, top + h))
        t = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1)
        out.append((t - m) / s)
    return out


def erf_image(erf: np.ndarray) -> np.ndarray:
    """``log10(erf + 1)`` scaled to [0, 1] (the map that is shown)."""
    data = np.log10(np.asarray(erf, dtype=np.float64) + 1)
    return data / data.max() if data.max() > 0 else data


def save_erf_image(erf: np.ndarray, path: str) -> str:
    """Write the shown map as an 8-bit grayscale PNG, one pixel per input pixel."""
    from PIL import Image
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(np.round(erf_image(erf) * 255).astype(np.uint8), mode='L').save(path)
    return path


def plot_erfs(erfs: Dict[str, np.ndarray], path: str,
              thresholds: Sequence[float] = (0.2, 0.5, 0.99), title: str = '') -> str:
    """Side-by-side heatmaps of ``log10(erf + 1)`` (each normalised to [0, 1]) with the area
    ratios in the panel titles; written as PNG to ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    n = len(erfs)
    if n == 0:
        raise ValueError('plot_erfs needs at least one ERF map')
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.9), squeeze=False)
    for ax, (name, erf) in zip(axes[0], erfs.items()):
        ax.imshow(erf_image(erf), cmap='viridis', vmin=0, vmax=1)
        ratios = erf_area_ratios(erf, thresholds)
        ax.set_title(name + '\n' + ', '.join(f'{int(round(t * 100))}%: {r:.3f}'
                                              for t, r in ratios.items()), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.92) if title else None)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
