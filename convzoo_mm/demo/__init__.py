"""Embedded demo data and the demo job."""
from .data import CLASSES, SEG_CLASSES, make_demo_data

__all__ = ['CLASSES', 'SEG_CLASSES', 'make_demo_data']
