import os

import torch

# Without a GPU, Triton kernels run in Triton's CPU interpreter, which must be chosen before the
# kernels are defined (convzoo_mm.ops is imported later than this file).
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

import pytest  # noqa: E402

from tests.utils import ROOT


@pytest.fixture(scope='session')
def demo_data():
    """The generated demo datasets (idempotent: reused when already there)."""
    from convzoo_mm.demo import make_demo_data
    return make_demo_data(os.path.join(ROOT, 'data', 'demo'), verbose=False)
