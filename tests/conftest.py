import os

import pytest

from tests.utils import ROOT


@pytest.fixture(scope='session')
def demo_data():
    """The generated demo datasets (idempotent: reused when already there)."""
    from convzoo_mm.demo import make_demo_data
    return make_demo_data(os.path.join(ROOT, 'data', 'demo'), verbose=False)
