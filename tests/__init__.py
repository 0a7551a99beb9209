"""Test package (a regular package so that `tests.utils` is ours, not the `tests` package
mmsegmentation 1.2.2 installs into site-packages)."""
