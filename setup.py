import os

from setuptools import find_packages, setup


def extensions():
    """convzoo_mm._C: the C++ CPU kernels of WTConv, OctaveConv and DRConv (ops/cpu_kernels.py).
    Needs torch importable at build time (pip install --no-build-isolation -e .); without torch
    (or with CONVZOO_NO_EXT=1) the package installs without it and uses the PyTorch path."""
    if os.environ.get('CONVZOO_NO_EXT'):
        return dict()
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        return dict()
    ext = CppExtension('convzoo_mm._C', ['convzoo_mm/ops/csrc/cpu_kernels.cpp'],
                       depends=['convzoo_mm/ops/csrc/depthwise_kernel.h',
                                'convzoo_mm/ops/csrc/region_kernel.h'],
                       extra_compile_args=['-O3', '-fopenmp'], extra_link_args=['-fopenmp'])
    return dict(ext_modules=[ext], cmdclass={'build_ext': BuildExtension.with_options(
        use_ninja=False)})


setup(
    name='convzoo_mm',
    version='0.1.0',
    description='WTConv, OctaveConv and DRConv for MMDetection 3.x and MMSegmentation 1.x',
    packages=find_packages(include=['convzoo_mm', 'convzoo_mm.*']),
    python_requires='>=3.8',
    install_requires=[
        'torch>=2.0', 'mmengine>=0.10.0,<0.11', 'mmcv>=2.0.0,<2.2.0',
        'mmdet>=3.0.0,<3.4', 'mmsegmentation>=1.0.0,<1.3', 'PyWavelets', 'ftfy', 'regex',
    ],
    extras_require={
        'tests': ['pytest', 'hypothesis', 'matplotlib', 'onnx', 'onnxruntime', 'triton']},
    **extensions(),
)
