"""Second derivatives (create_graph=True: gradient penalties, Hessian-vector products): WTConv's
PyTorch path (with or without the C++ CPU kernels) is twice differentiable, checked with
``torch.autograd.gradgradcheck`` in float64; the fast paths whose hand-written backward is not
(DRConv, OctaveConv's fused and even-size Functions, WTConv's Triton kernels) raise an error
naming the layer instead of returning wrong or missing second derivatives."""
import pytest
import torch

from convzoo_mm.layers import DRConv, OctaveConv, WTConv
from convzoo_mm.ops import cpu_kernels
from convzoo_mm.ops import haar_wtconv as fused_ops


def _random_params(layer):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    return layer


@pytest.mark.parametrize('cpp', [True, False], ids=['cpp-kernels', 'pytorch'])
@pytest.mark.parametrize('kwargs,size', [
    (dict(in_channels=2, out_channels=2, kernel_size=3, groups=2, wt_levels=2), (5, 6)),
    (dict(in_channels=2, out_channels=2, kernel_size=3, groups=2, wt_levels=1, stride=2), (6, 5)),
    (dict(in_channels=2, out_channels=3, kernel_size=3, wt_levels=1, bias=False), (4, 4)),
])
def test_wtconv_gradgradcheck(kwargs, size, cpp, monkeypatch):
    if cpp and not cpu_kernels.AVAILABLE:
        pytest.skip('C++ extension not built')
    if not cpp:
        monkeypatch.setattr(cpu_kernels, 'AVAILABLE', False)
    layer = _random_params(WTConv(impl='torch', **kwargs).double())
    x = torch.randn(1, kwargs['in_channels'], *size, dtype=torch.float64, requires_grad=True)
    params = [p for p in layer.parameters()]

    def f(x, *ps):
        return torch.func.functional_call(layer, dict(zip(
            [n for n, _ in layer.named_parameters()], ps)), (x,))

    assert torch.autograd.gradgradcheck(f, (x, *params), eps=1e-6, atol=1e-5)


def test_wtconv_gradient_penalty_equals_the_pure_pytorch_path(monkeypatch):
    """The penalty's parameter gradients with the C++ kernels equal those without them (where
    they used to be missing or wrong)."""
    if not cpu_kernels.AVAILABLE:
        pytest.skip('C++ extension not built')
    layer = _random_params(WTConv(3, 3, 5, groups=3, wt_levels=2, impl='torch').double())
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, 9, 11, dtype=torch.float64)

    def penalty_grads():
        gx, = torch.autograd.grad((layer(x) * v).sum(), x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), list(layer.parameters()),
                                   allow_unused=True)

    got = penalty_grads()
    monkeypatch.setattr(cpu_kernels, 'AVAILABLE', False)
    want = penalty_grads()
    for (name, _), a, b in zip(layer.named_parameters(), got, want):
        if 'bias' in name:  # the input gradient does not depend on a bias
            assert a is None and b is None, name
            continue
        assert a is not None and b is not None, name
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)
        assert a.abs().sum() > 0, name


LAYERS = {
    'DRConv-m4': lambda: DRConv(4, 4, 3, padding=1, num_regions=4),
    'DRConv-m8': lambda: DRConv(4, 4, 3, padding=1),
    'DRConv-basis': lambda: DRConv(4, 4, 3, padding=1, num_regions=4, generator='basis'),
    'OctaveConv': lambda: OctaveConv(4, 4, 3, padding=1, alpha_in=0.5, alpha_out=0.5),
    'OctaveConv-groups': lambda: OctaveConv(4, 4, 3, padding=1, groups=2, alpha_in=0.5,
                                            alpha_out=0.5),
}


@pytest.mark.parametrize('name', list(LAYERS))
def test_fast_paths_without_second_derivatives_raise_a_named_error(name):
    layer = LAYERS[name]().double()
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match=f'{name.split("-")[0]}: second derivatives'):
        torch.autograd.grad(layer(x).square().sum(), x, create_graph=True)
    # first derivatives are unaffected
    gx, = torch.autograd.grad(layer(x).square().sum(), x)
    assert gx.abs().sum() > 0


@pytest.mark.skipif(not fused_ops.AVAILABLE, reason='Triton is not installed')
def test_fused_wtconv_second_derivative_raises_a_named_error():
    device = 'cuda' if torch.cuda.is_available() else 'cpu'  # else Triton's interpreter
    layer = WTConv(4, 4, 5, groups=4, wt_levels=1, impl='triton').to(device)
    x = torch.randn(1, 4, 8, 8, device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"WTConv \(Triton kernels\): second derivatives.*"
                                           r"impl='torch'"):
        torch.autograd.grad(layer(x).square().sum(), x, create_graph=True)
