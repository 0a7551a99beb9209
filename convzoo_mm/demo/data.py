"""Deterministic synthetic demo data: no download, a few seconds to generate.

Two small datasets of coloured shapes (circle, square, triangle) on smooth noisy backgrounds:

* ``<root>/coco``: COCO-format instances (boxes + polygon masks),
  ``annotations/instances_{train,val}.json`` and images in ``{train,val}/``;
* ``<root>/ade``: ADE20K layout, ``images/{training,validation}/*.jpg`` and label PNGs in
  ``annotations/{training,validation}/*.png`` with 1 = background, 2.. = shapes and 0 unused, so
  mmseg's ``reduce_zero_label=True`` gives classes background/circle/square/triangle = 0..3.

Each class has its own hue range (jittered) and its own geometry, sizes vary 3x, objects never
overlap; train and val use different seeds, so val images are unseen.
"""
import json
import math
import os
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ('circle', 'square', 'triangle')
PALETTE = [(220, 20, 60), (0, 160, 0), (30, 60, 230)]
SEG_CLASSES = ('background', ) + CLASSES
SEG_PALETTE = [(0, 0, 0)] + PALETTE
_HUES = (0.0, 1 / 3, 2 / 3)          # red-ish circles, green-ish squares, blue-ish triangles
SPLITS = {'train': 0, 'val': 1}       # split -> seed offset
ADE_SPLITS = {'train': 'training', 'val': 'validation'}
VERSION = 1                           # bump when the generator changes: data is regenerated


def _hsv_to_rgb(h: float, s: float, v: float) -> Tuple[int, int, int]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return tuple(int(round(255 * c)) for c in rgb)


def _shape_polygon(cls: int, cx: float, cy: float, r: float, angle: float) -> List[float]:
    """Polygon (x0, y0, x1, y1, ...) of a shape with circumradius r."""
    n = {0: 48, 1: 4, 2: 3}[cls]
    start = angle + (math.pi / 4 if cls == 1 else 0.0)
    pts = []
    for k in range(n):
        a = start + 2 * math.pi * k / n
        pts += [cx + r * math.cos(a), cy + r * math.sin(a)]
    return pts


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    c0, c1 = rng.uniform(60, 190, 3), rng.uniform(60, 190, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    grad = c0 * (1 - t) + c1 * t
    img = np.repeat(grad, size, axis=1) if rng.random() < 0.5 else np.repeat(
        grad.transpose(1, 0, 2), size, axis=0)
    img = img + rng.normal(0, 12, (size, size, 3))
    return np.clip(img, 0, 255)


def render_sample(rng: np.random.Generator, size: int = 128, max_objects: int = 4):
    """One image (H, W, 3 uint8), its instance list [(cls, polygon)] and label map (H, W)."""
    img = Image.fromarray(_background(rng, size).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    labels = Image.new('L', (size, size), 1)
    ldraw = ImageDraw.Draw(labels)
    placed: List[Tuple[float, float, float]] = []
    objects = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            r = rng.uniform(size * 0.09, size * 0.26)
            cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
            if all(math.hypot(cx - x, cy - y) > r + rr + 2 for x, y, rr in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        cls = int(rng.integers(len(CLASSES)))
        hue = (_HUES[cls] + rng.uniform(-0.07, 0.07)) % 1.0
        colour = _hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
        poly = _shape_polygon(cls, cx, cy, r, rng.uniform(0, 2 * math.pi))
        draw.polygon(poly, fill=colour)
        ldraw.polygon(poly, fill=cls + 2)
        objects.append((cls, poly))
    return np.asarray(img), objects, np.asarray(labels)


def _bbox(poly: List[float], size: int) -> List[float]:
    xs, ys = np.clip(poly[0::2], 0, size), np.clip(poly[1::2], 0, size)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()),
            float(ys.max() - ys.min())]


def _poly_area(poly: List[float]) -> float:
    xs, ys = np.asarray(poly[0::2]), np.asarray(poly[1::2])
    return float(0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))


def make_demo_data(root: str = 'data/demo', num_train: int = 240, num_val: int = 60,
                   size: int = 128, seed: int = 0, verbose: bool = True) -> Dict[str, str]:
    """Write both datasets under ``root`` (skipped if a matching stamp file is there).

    Returns the paths ``{'coco': <root>/coco, 'ade': <root>/ade}``.
    """
    stamp = os.path.join(root, '.stamp')
    key = json.dumps(dict(version=VERSION, num_train=num_train, num_val=num_val, size=size,
                          seed=seed))
    paths = {'coco': os.path.join(root, 'coco'), 'ade': os.path.join(root, 'ade')}
    if os.path.isfile(stamp) and open(stamp).read() == key:
        if verbose:
            print(f'[demo data] up to date in {root}')
        return paths
    for split, offset in SPLITS.items():
        count = num_train if split == 'train' else num_val
        rng = np.random.default_rng(seed * 1000 + offset)
        coco_dir = os.path.join(paths['coco'], split)
        ade_img = os.path.join(paths['ade'], 'images', ADE_SPLITS[split])
        ade_ann = os.path.join(paths['ade'], 'annotations', ADE_SPLITS[split])
        for d in (coco_dir, ade_img, ade_ann, os.path.join(paths['coco'], 'annotations')):
            os.makedirs(d, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            img, objects, labels = render_sample(rng, size)
            name = f'{split}_{i:05d}'
            Image.fromarray(img).save(os.path.join(coco_dir, name + '.jpg'), quality=95)
            Image.fromarray(img).save(os.path.join(ade_img, name + '.jpg'), quality=95)
            Image.fromarray(labels).save(os.path.join(ade_ann, name + '.png'))
            images.append(dict(id=i, file_name=name + '.jpg', height=size, width=size))
            for cls, poly in objects:
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=i, category_id=cls + 1,
                    segmentation=[[round(v, 2) for v in poly]], area=_poly_area(poly),
                    bbox=_bbox(poly, size), iscrowd=0))
        categories = [dict(id=k + 1, name=n, supercategory='shape') for k, n in enumerate(CLASSES)]
        with open(os.path.join(paths['coco'], 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)
        if verbose:
            print(f'[demo data] {split}: {count} images, {len(annotations)} objects')
    with open(stamp, 'w') as f:
        f.write(key)
    return paths
