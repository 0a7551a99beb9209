"""Analysis tools: exact FLOPs/params, layer and model benchmarks, effective receptive fields,
layer pictures and results tables. The CLIs in ``tools/analysis/`` are thin wrappers over these.

Submodules are imported on use (``from convzoo_mm.analysis.flops import get_model_complexity``) so
that ``import convzoo_mm`` stays light (no matplotlib, no mmdet/mmseg).
"""
