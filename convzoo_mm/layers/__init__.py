"""Convolution layers, one file each, registered in mmengine's root MODELS registry."""
