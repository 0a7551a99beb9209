from setuptools import find_packages, setup

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
    extras_require={'tests': ['pytest', 'hypothesis', 'matplotlib', 'onnx', 'onnxruntime', 'triton']},
)
