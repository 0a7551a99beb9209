"""Backbones built from convzoo_mm layers, registered in mmengine's root MODELS registry."""
