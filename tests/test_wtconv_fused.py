"""The fused Triton path of WTConv (convzoo_mm.ops.haar_wtconv) against the PyTorch path and the
published computation: outputs and every gradient, odd sizes, dilation, stride, channels_last,
in != out, levels 0-5, autocast. On a machine without a GPU the kernels run in Triton's CPU
interpreter (tests/conftest.py sets TRITON_INTERPRET=1), so CI checks the kernels' arithmetic;
with CUDA they run compiled, and the automatic choice of the fused path is checked too."""
import copy
import os
import subprocess
import sys

import pytest
import torch

from convzoo_mm.analysis.host_probe import DispatchCounter, counted_launches, layer_host_cost
from convzoo_mm.layers import WTConv
from convzoo_mm.ops import haar_wtconv as fused_ops
from tests.utils import ROOT

pytestmark = pytest.mark.skipif(not fused_ops.AVAILABLE, reason='Triton is not installed')
CUDA = torch.cuda.is_available()
DEVICE = 'cuda' if CUDA else 'cpu'


@pytest.fixture(autouse=True)
def _exact_cudnn():
    """fp32 convs without TF32, so both paths compute in full float32."""
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = old


def _pair(c_in, c_out, k, levels, stride=1, dilation=1, seed=0, groups=None):
    """(PyTorch-path layer, Triton-path copy) with random (not initial) weights."""
    torch.manual_seed(seed)
    layer = WTConv(c_in, c_out, k, stride, dilation=dilation, wt_levels=levels,
                   groups=groups or (c_in if c_in == c_out else 1), impl='torch')
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    layer = layer.to(DEVICE)
    fused = copy.deepcopy(layer)
    fused.impl = 'triton'
    return layer, fused


def _run(layer, x, grad):
    x = x.clone().requires_grad_()
    out = layer(x)
    out.backward(grad)
    return out.detach(), [x.grad] + [p.grad for p in layer.parameters()]


CASES = [  # c_in, c_out, H, W, levels, k, stride, dilation, channels_last (, groups)
    (3, 3, 13, 11, 2, 5, 1, 1, False),
    (3, 3, 16, 16, 1, 3, 1, 1, True),
    (2, 2, 17, 9, 3, 3, 1, 2, False),
    (2, 2, 5, 7, 0, 3, 1, 1, False),
    (2, 2, 1, 1, 2, 3, 1, 1, False),
    (2, 2, 6, 3, 4, 5, 1, 1, True),
    (2, 2, 33, 20, 5, 3, 1, 1, False),
    (4, 4, 13, 11, 2, 7, 2, 1, True),
    (3, 5, 9, 12, 2, 3, 1, 1, True),
    (2, 2, 10, 9, 1, 3, 3, 1, False),
    (4, 6, 11, 13, 2, 3, 2, 1, True, 2),
    (40, 40, 12, 13, 2, 5, 1, 1, True),     # blocks of 32, one masked; a level's 4C = 160
    (96, 96, 9, 10, 3, 5, 1, 2, False),     # WTConvNeXt-T stage 1 width: full blocks of 32
]


@pytest.mark.parametrize('c_in,c_out,h,w,levels,k,stride,dilation,cl,groups',
                         [c if len(c) == 10 else (*c, None) for c in CASES])
def test_fused_matches_pytorch_path(c_in, c_out, h, w, levels, k, stride, dilation, cl, groups):
    layer, fused = _pair(c_in, c_out, k, levels, stride, dilation, groups=groups)
    assert fused.uses_fused_kernels(torch.empty(1, c_in, 2, 2, device=DEVICE))
    x = torch.randn(2, c_in, h, w, device=DEVICE)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    torch.manual_seed(1)
    grad = torch.randn_like(layer(x))
    out_ref, grads_ref = _run(layer, x, grad)
    out, grads = _run(fused, x, grad)
    assert out.shape == (2, c_out, -(-h // stride), -(-w // stride))
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4 * max(1.0, float(b.abs().max())))


def test_fused_matches_published_layer():
    """Independent oracle: the published WTConv2d computation (stride-2 grouped convs)."""
    from convzoo_mm.analysis.references import PublishedWTConv2d
    _, fused = _pair(4, 4, 5, 3)
    ref = PublishedWTConv2d(4, 5, 1, True, 3).to(DEVICE)
    ref.load_state_dict(fused.state_dict(), strict=False)
    x = torch.randn(2, 4, 19, 14, device=DEVICE)
    torch.testing.assert_close(fused(x), ref(x), rtol=1e-5, atol=1e-4)


def test_no_grad_forward_matches_and_input_gradient_is_optional():
    layer, fused = _pair(3, 3, 5, 2)
    x = torch.randn(1, 3, 12, 15, device=DEVICE)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), layer(x), rtol=1e-5, atol=1e-5)
    fused(x).square().sum().backward()      # x needs no gradient: only the weights get one
    layer(x).square().sum().backward()
    for a, b in zip(fused.parameters(), layer.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize('dtype', [torch.bfloat16] + ([torch.float16] if CUDA else []))
def test_fused_under_autocast_close_to_fp32(dtype):
    layer, fused = _pair(4, 4, 5, 2)
    x = torch.randn(2, 4, 15, 18, device=DEVICE)
    ref = layer(x)
    with torch.autocast(DEVICE, dtype=dtype):
        out = fused(x)
    assert out.dtype == dtype
    assert float((out.float() - ref).abs().max()) <= 3e-2 * float(ref.abs().max())
    x.requires_grad_()
    layer(x).sum().backward()
    want = [x.grad] + [p.grad for p in layer.parameters()]
    x.grad = None
    with torch.autocast(DEVICE, dtype=dtype):
        fused(x).float().sum().backward()
    assert x.grad.dtype == torch.float32
    for got, ref in zip([x.grad] + [p.grad for p in fused.parameters()], want):
        assert float((got.float() - ref).abs().max()) <= 3e-2 * float(ref.abs().max())


def test_automatic_choice_and_bad_impl():
    layer = WTConv(4, 4, 5, groups=4, wt_levels=2)
    assert not layer.uses_fused_kernels(torch.empty(1, 4, 8, 8))       # CPU -> PyTorch path
    if CUDA:
        layer = layer.cuda()
        assert layer.uses_fused_kernels(torch.empty(1, 4, 8, 8, device='cuda'))
        assert not WTConv(4, 4, 4, groups=4).uses_fused_kernels(torch.empty(1, 4, 8, 8,
                                                                         device='cuda'))
        assert not WTConv(4, 4, 5, groups=4, wt_type='db2').uses_fused_kernels(
            torch.empty(1, 4, 8, 8, device='cuda'))
    with pytest.raises(ValueError, match="impl='fast'.*'auto', 'torch' or 'triton'"):
        WTConv(4, 4, 5, impl='fast')
    with pytest.raises(ValueError, match='odd kernel_size'):
        WTConv(4, 4, 4, impl='triton')
    with pytest.raises(ValueError, match="got 'db2'"):
        WTConv(4, 4, 5, wt_type='db2', impl='triton')


_CPU_WITHOUT_INTERPRETER = r'''
import torch
from convzoo_mm.layers import WTConv
from convzoo_mm.ops import haar_wtconv
layer = WTConv(4, 4, 5, groups=4, wt_levels=2, impl='triton')
x = torch.randn(1, 4, 8, 8)
print(haar_wtconv.runs_on(x))
for call in (lambda: layer(x), lambda: haar_wtconv.haar_wtconv(
        x, layer.base_conv.weight, None, layer.base_scale.weight, [], [])):
    try:
        call()
    except ValueError as e:
        print('ValueError', e)
'''


def test_forced_triton_on_a_device_the_kernels_cannot_run_on_is_a_named_error():
    """impl='triton' on a CPU input without the interpreter (Triton's own error would be
    '0 active drivers'), and on a device that is neither CUDA nor the CPU."""
    env = dict(os.environ, TRITON_INTERPRET='0', CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run([sys.executable, '-c', _CPU_WITHOUT_INTERPRETER], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == 'False'
    assert lines[1].startswith("ValueError impl='triton': the Triton kernels run on CUDA inputs")
    assert 'got an input on cpu' in lines[1] and "use impl='auto' or 'torch'" in lines[1]
    assert lines[2] == ('ValueError haar_wtconv: x is on cpu; the Triton kernels run on CUDA '
                        'tensors, or on the CPU with TRITON_INTERPRET=1 set before import')
    assert fused_ops.runs_on(torch.empty(1)) == (os.environ.get('TRITON_INTERPRET') == '1')
    layer = WTConv(4, 4, 5, groups=4, wt_levels=1, impl='triton')
    with pytest.raises(ValueError, match="impl='triton'.*got an input on meta"):
        layer.uses_fused_kernels(torch.empty(1, 4, 8, 8, device='meta'))


_COMPILE_SCRIPT = r'''
import json, re, subprocess, sys, tempfile
import triton
from triton.backends.compiler import GPUTarget
from convzoo_mm.ops import haar_wtconv as hw

BIN = sys.argv[1]
ints = dict.fromkeys(['P', 'C', 'H', 'W', 'h', 'w', 'N', 'row', 'sxn', 'sxc', 'sxh',
                      'sxw', 'san', 'sac', 'sah', 'saw', 'son', 'soc', 'soh', 'sow'], 'i32')


def usage(fn, ptrs, const, arch=90):
    names = fn.arg_names
    sig = {a: ptrs.get(a) or ints.get(a) or 'constexpr' for a in names}
    kernel = triton.compile(triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=const),
                            target=GPUTarget('cuda', arch, 32), options={'num_warps': hw.NUM_WARPS})
    with tempfile.NamedTemporaryFile(suffix='.cubin') as f:
        f.write(kernel.asm['cubin'])
        f.flush()
        dump = subprocess.run([BIN + '/cuobjdump', '--dump-resource-usage', f.name],
                              capture_output=True, text=True, check=True).stdout
    return [int(v) for v in re.search(r'REG:(\d+) STACK:(\d+)', dump).groups()]


out = {}  # Hopper in fp32 / bf16 (spills checked), Ampere (A100) in fp16 (compiles)
for dt, k, flip, nb, arch in [('fp32', 5, 0, 4, 90), ('bf16', 5, 1, 4, 90), ('fp32', 7, 1, 1, 90),
                              ('fp16', 5, 1, 4, 80)]:
    bp, bc = hw._tiles(96, hw.ANALYSIS_TILE)
    ptrs = {'x_ptr': '*' + dt, 'w_ptr': '*fp32', 'f_ptr': '*' + dt, 'b_ptr': '*' + dt}
    out[f'sm{arch} analysis {dt} k{k} flip{flip} nb{nb}'] = usage(
        hw._analysis_conv_kernel, ptrs,
        dict(K=k, DIL=1, PAD=(k - 1) // 2, FLIP=flip, NB=nb, BP=bp, BC=bc), arch)
for dt, levels, k, flip, bias, arch in [('bf16', 5, 5, 0, 1, 90), ('fp32', 1, 5, 1, 0, 90),
                                       ('fp16', 3, 3, 0, 1, 80)]:
    bp, bc = hw._tiles(96, hw.SYNTHESIS_TILE)
    ptrs = {'f_ptr': '*' + dt, 'a_ptr': '*' + dt, 'w_ptr': '*fp32', 'b_ptr': '*fp32',
            'o_ptr': '*' + dt}
    out[f'sm{arch} synthesis {dt} L{levels} k{k}'] = usage(
        hw._synthesis_kernel, ptrs, dict(LEVELS=levels, K=k, DIL=1, PAD=(k - 1) // 2, FLIP=flip,
                                         HAS_BIAS=bias, BP=bp, BC=bc), arch)
for dt, k, bias, arch in [('fp32', 5, 1, 90), ('bf16', 5, 0, 90), ('fp32', 7, 0, 90),
                          ('fp16', 3, 1, 80)]:
    kk, bp, bc = hw._weight_grad_tiles(96, k)
    ptrs = {'g_ptr': '*' + dt, 'x_ptr': '*' + dt, 'gl_ptr': '*' + dt, 'xl_ptr': '*' + dt,
            'part_ptr': '*fp32'}
    out[f'sm{arch} weight grad {dt} k{k}'] = usage(
        hw._weight_grad_kernel, ptrs, dict(K=k, KK=kk, DIL=1, PAD=(k - 1) // 2, BIAS=bias,
                                           BP=bp, BC=bc), arch)
print(json.dumps(out))
'''


def test_kernels_compile_for_hopper_without_spills():
    """CI has no GPU and runs the kernels in Triton's interpreter, which accepts programs the
    compiler may not: compile them for sm_90 and sm_80 (Triton's bundled ptxas, no GPU needed)
    at the launch configuration of the wrappers, and check that on sm_90 the k=5 kernels and
    the synthesis keep all values in registers (spills to local memory were what made an
    earlier tiling slow and its compile take 10-40 s per variant)."""
    import json
    import os
    import subprocess
    import sys

    import triton
    bin_dir = os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin')
    if not all(os.path.exists(os.path.join(bin_dir, b)) for b in ('ptxas', 'cuobjdump')):
        pytest.skip("this Triton install has no NVIDIA backend tools")
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    run = subprocess.run([sys.executable, '-c', _COMPILE_SCRIPT, bin_dir], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    usage = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(usage) == 11
    for name, (regs, stack) in usage.items():
        assert regs <= 255, name
        if name.startswith('sm90') and 'k7' not in name:
            assert stack == 0, f'{name}: {stack} bytes of register spills'


def test_second_derivative_raises_and_float64_keeps_pytorch_path():
    """The fused backward is first-order: a gradient penalty through it must fail loudly (not
    silently drop the second-order terms); float64 inputs must not be rounded to float32."""
    _, fused = _pair(4, 4, 3, 2)
    x = torch.randn(1, 4, 9, 10, device=DEVICE, requires_grad=True)
    with pytest.raises(RuntimeError, match=r'WTConv \(Triton kernels\): second derivatives'):
        torch.autograd.grad(fused(x).square().sum(), x, create_graph=True)
    if CUDA:
        auto = copy.deepcopy(fused)
        auto.impl = 'auto'
        assert auto.uses_fused_kernels(x)
        assert not auto.uses_fused_kernels(x.double())


def test_kernel_wrappers_reject_wrong_layouts():
    """Direct callers of the kernels get a named error, not garbage read past a buffer."""
    x = torch.randn(1, 4, 8, 8, device=DEVICE).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match=r'weight must be a contiguous float32 \(4, k, k, C=4\) '):
        fused_ops.haar_analysis_conv(x, torch.zeros(4, 4, 3, 3, device=DEVICE))  # (C, 4, k, k)
    kernel = torch.zeros(3, 3, 4, device=DEVICE)
    bands = fused_ops.packed_bands(x[:, :, :4, :4], 2)
    with pytest.raises(ValueError, match='packed_bands views of an input like'):
        fused_ops.haar_synthesis(bands, x, kernel)                  # bands of a 4x4 input
    good = fused_ops.packed_bands(x, 2)
    with pytest.raises(ValueError, match='packed_bands views'):
        fused_ops.haar_synthesis(good[::-1], x, kernel)
    with pytest.raises(ValueError, match=r'base_weight must be a contiguous float32 \(k, k, C=4\)'):
        fused_ops.haar_synthesis(good, x, torch.zeros(4, 1, 3, 3, device=DEVICE))  # (C, 1, k, k)
    with pytest.raises(ValueError, match='base_weight must have an odd kernel size, got 2'):
        fused_ops.haar_synthesis(good, x, torch.zeros(2, 2, 4, device=DEVICE))
    with pytest.raises(ValueError, match=r'base_bias must be a contiguous float32 \(C=4, \)'):
        fused_ops.haar_synthesis(good, x, kernel, torch.zeros(4, device=DEVICE).half())
    with pytest.raises(ValueError, match='kernel_size must be odd, got 4'):
        fused_ops.depthwise_weight_grad(x, x, 4)
    with pytest.raises(ValueError, match='dilation must be >= 1, got 0'):
        fused_ops.depthwise_weight_grad(x, x, 3, 0)
    with pytest.raises(ValueError, match='must share dtype and device'):
        fused_ops.depthwise_weight_grad(x.double(), x, 3)
    with pytest.raises(ValueError, match=r'grad_out \(1, 4, 8, 7\) and x \(1, 4, 8, 8\)'):
        fused_ops.depthwise_weight_grad(x[..., :7], x, 3)


def test_haar_wtconv_function_matches_layer_and_names_bad_shapes():
    """The public function on the layer's parameters gives the layer's output; a parameter of
    the wrong shape is named (the layer itself skips these checks)."""
    layer, _ = _pair(4, 4, 3, 2)
    x = torch.randn(2, 4, 9, 7, device=DEVICE)
    ws = [m.weight for m in layer.wavelet_convs]
    ss = [m.weight for m in layer.wavelet_scale]
    args = (layer.base_conv.weight, layer.base_conv.bias, layer.base_scale.weight)
    with torch.no_grad():
        torch.testing.assert_close(fused_ops.haar_wtconv(x, *args, ws, ss), layer(x),
                                   rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match='2 level_weights but 1 level_scales'):
            fused_ops.haar_wtconv(x, *args, ws, ss[:1])
        with pytest.raises(ValueError, match=r'level_scales\[1\] must have shape \(1, 16, 1, 1\)'):
            fused_ops.haar_wtconv(x, *args, ws, [ss[0], ss[1].view(-1)])
        with pytest.raises(ValueError, match=r'base_weight must have shape \(8, 1, 3, 3\) for x '
                           r'with C=8'):
            fused_ops.haar_wtconv(torch.cat([x, x], 1), *args, ws, ss)
        with pytest.raises(ValueError, match=r'base_bias must have shape \(4,\)'):
            fused_ops.haar_wtconv(x, args[0], args[1][:3], args[2], ws, ss)
        with pytest.raises(ValueError, match=r'must be 4-D, .* got \(2, 4, 9, 7\) and \(\)'):
            fused_ops.haar_wtconv(x, torch.tensor(1.0), None, args[2], [], [])
        even = torch.zeros(4, 1, 2, 2, device=DEVICE)
        with pytest.raises(ValueError, match='kernel size must be odd, got 2'):
            fused_ops.haar_wtconv(x, even, None, args[2], [], [])


@pytest.mark.parametrize('n,c,h,w,k,dilation,bias,cl,dtype', [
    (2, 3, 17, 13, 3, 1, True, False, torch.float32),
    (3, 40, 25, 31, 5, 1, False, True, torch.float32),   # 2325 positions: 5 programs' sums
    (1, 5, 9, 7, 7, 2, True, True, torch.float32),
    (2, 33, 6, 5, 5, 3, True, False, torch.float32),     # dilation past the image
    (2, 16, 12, 10, 5, 1, True, True, torch.bfloat16),
])
def test_depthwise_weight_grad_matches_autograd(n, c, h, w, k, dilation, bias, cl, dtype):
    """Independent oracle: autograd through F.conv2d (groups=C) in float64."""
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w, device=DEVICE).to(dtype)
    g = torch.randn(n, c, h, w, device=DEVICE).to(dtype)
    if cl:
        x, g = (t.contiguous(memory_format=torch.channels_last) for t in (x, g))
    weight = torch.zeros(c, 1, k, k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(c, dtype=torch.float64, requires_grad=True)
    out = torch.nn.functional.conv2d(x.cpu().double(), weight, b, 1, dilation * (k - 1) // 2,
                                     dilation, c)
    out.backward(g.cpu().double())
    got = fused_ops.depthwise_weight_grad(g, x, k, dilation, bias=bias)
    got_w, got_b = got if bias else (got, None)
    assert got_w.dtype == torch.float32 and got_w.shape == (c, 1, k, k)
    tol = 1e-4 if dtype == torch.float32 else 1e-3
    torch.testing.assert_close(got_w.cpu().double(), weight.grad, rtol=tol, atol=tol)
    if bias:
        torch.testing.assert_close(got_b.cpu().double(), b.grad, rtol=tol, atol=tol)


@pytest.mark.parametrize('flip', [False, True])
def test_synthesis_without_levels_is_the_base_conv(flip):
    """With no levels haar_synthesis is the depthwise conv itself: F.conv2d, and with the kernel
    flipped the transposed conv (the base conv's input gradient)."""
    torch.manual_seed(0)
    c, k, d = 6, 5, 2
    x = torch.randn(2, c, 11, 14, device=DEVICE).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c, 1, k, k, device=DEVICE)
    bias = torch.randn(c, device=DEVICE)
    kernel = weight.view(c, k, k).permute(1, 2, 0).contiguous()
    got = fused_ops.haar_synthesis([], x, kernel, bias, d, flip)
    pad = d * (k - 1) // 2
    conv = torch.nn.functional.conv_transpose2d if flip else torch.nn.functional.conv2d
    want = conv(x, weight, bias, 1, pad, dilation=d, groups=c) if flip else \
        conv(x, weight, bias, 1, pad, d, c)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_fused_path_runs_only_its_own_kernels():
    """The fused path's design, checked by counting: a training forward is L analysis launches
    and one synthesis (the base conv is inside it), the backward L more analysis launches, one
    weight-gradient launch (base and all levels) and one synthesis; neither calls a PyTorch
    convolution (cuDNN's depthwise weight gradient was the slow part of the backward, and each
    cuDNN call costs host time when the layer is bound by kernel launches)."""
    levels = 3
    _, fused = _pair(4, 4, 5, levels)
    x = torch.randn(2, 4, 19, 14, device=DEVICE, requires_grad=True)
    with counted_launches(run=True) as launches, DispatchCounter() as ops:
        out = fused(x)
        forward = list(launches)
        out.sum().backward()
    assert forward == ['analysis_conv'] * levels + ['synthesis']
    backward = launches[len(forward):]
    assert backward == ['analysis_conv'] * levels + ['weight_grad', 'synthesis']
    assert not any('conv' in op for op in ops.kernel_ops), sorted(ops.kernel_ops)


def test_fused_path_host_work_is_its_launches_and_few_small_ops():
    """Where the layer is bound by the host (small sizes on a GPU), each PyTorch op costs about
    as much as a kernel launch. With the launches stubbed out (the host probe of
    tools/analysis/host_probe.py), a forward runs these kernel-running PyTorch ops and no
    others (views and allocations aside): the scale fold (two cats, three multiplies); a
    training fwd+bwd with the base bias adds the weight-gradient sum and unfold; whatever the
    number of levels. The launches are the design's (2L + 3 per fwd+bwd)."""
    for levels in (1, 5):
        res = layer_host_cost(8, (40, 36), levels, batch=2, device=DEVICE, rounds=1,
                              repeats=1)
        assert res['kernel_ops'] == {'forward': dict(cat=2, mul=3),
                                     'fwd+bwd': dict(addcmul_=1, cat=2, mul=6, sum=2)}, res
        assert res['launches'] == {
            'forward': dict(analysis_conv=levels, synthesis=1),
            'fwd+bwd': dict(analysis_conv=2 * levels, synthesis=2, weight_grad=1)}, res
        assert res['calls']['fwd+bwd'] > res['calls']['forward'] > 5


@pytest.mark.parametrize('keep_all,bias,levels', [(True, True, 2), (False, True, 1),
                                                   (True, False, 0)])
def test_custom_ops_pass_opcheck(keep_all, bias, levels):
    """torch.library.opcheck of the two custom ops that torch.compile sees: schema, fake
    (meta) outputs with the real ones' shapes, strides and dtypes, autograd registration, and
    AOT dispatch with dynamic shapes."""
    layer, _ = _pair(4, 4, 3, levels)
    x = torch.randn(2, 4, 9, 7, device=DEVICE, requires_grad=True)
    params = [layer.base_conv.weight, layer.base_conv.bias if bias else None,
              layer.base_scale.weight, [m.weight for m in layer.wavelet_convs],
              [m.weight for m in layer.wavelet_scale]]
    torch.library.opcheck(fused_ops._forward_op, (x, *params, 1, keep_all))
    with torch.no_grad():
        weight, level_w, folded, fb, _, _ = fused_ops._fold(*params)
        out, x_cl, kept = fused_ops._forward(x, weight, level_w, fb, 1, 4 if keep_all else 1)
    for need_x in (True, False):      # weight gradients need all four subbands kept
        torch.library.opcheck(fused_ops._backward_op,
                              (torch.randn_like(out), x_cl, folded, kept if keep_all else None,
                               3, levels, 1, need_x, keep_all, bias))


@pytest.mark.parametrize('shape,make', [
    ((2, 1, 9, 7), None),                                    # C = 1: NCHW is channels_last too
    ((4, 3, 1, 1), None),                                    # 1x1
    ((1, 3, 12, 10), lambda t: t[0].permute(1, 2, 0).contiguous().permute(2, 0, 1)[None]),
])
def test_custom_op_fake_strides_equal_real_ones(shape, make):
    """Where size-1 dims make a layout ambiguous, the fake (meta) outputs of both custom ops have
    exactly the real outputs' strides (opcheck ignores strides of size-1 dims; a following op
    compiled by inductor does not)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    c = shape[1]
    layer, _ = _pair(c, c, 3, 2)
    x = torch.randn(shape, device=DEVICE)
    x = (make(x) if make else x).requires_grad_()
    params = [layer.base_conv.weight, layer.base_conv.bias, layer.base_scale.weight,
              [m.weight for m in layer.wavelet_convs], [m.weight for m in layer.wavelet_scale]]
    real = fused_ops._forward_op(x, *params, 1, True)
    grad = torch.randn_like(real[0])
    real_b = fused_ops._backward_op(grad, x, real[2], real[1], 3, 2, 1, True, True, True)
    mode = FakeTensorMode()
    fake_args = [mode.from_tensor(t) for t in (x, *params[:3])] + [
        [mode.from_tensor(t) for t in ts] for ts in params[3:]]
    with mode:
        fake = torch.ops.convzoo_mm.haar_wtconv_forward(*fake_args, 1, True)
        fake_b = torch.ops.convzoo_mm.haar_wtconv_backward(
            mode.from_tensor(grad), fake_args[0], mode.from_tensor(real[2]),
            mode.from_tensor(real[1]), 3, 2, 1, True, True, True)
    for r, f in zip((*real, *real_b), (*fake, *fake_b)):
        assert (r.shape, r.stride(), r.dtype) == (f.shape, f.stride(), f.dtype)


@pytest.mark.parametrize('backend', ['record', 'aot_eager',
                                     pytest.param('inductor', marks=pytest.mark.slow)])
def test_compiled_layer_runs_the_custom_ops(backend):
    """Under torch.compile (fullgraph, dynamic shapes) the fused path is the custom op in the
    graph, not a graph break or the PyTorch path, and its outputs and all gradients equal the
    PyTorch path's at two sizes; a frozen copy gives the input gradient alone."""
    graphs = []

    def record(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward
    layer, fused = _pair(4, 4, 3, 3, seed=2)
    torch._dynamo.reset()
    compiled = torch.compile(fused, backend=record if backend == 'record' else backend,
                             fullgraph=True, dynamic=True)
    for shape in ((2, 4, 13, 11), (1, 4, 20, 9)):
        x = torch.randn(shape, device=DEVICE)
        grad = torch.randn(shape, device=DEVICE)
        want_out, want = _run(layer, x, grad)
        got_out, got = _run(compiled, x, grad)
        torch.testing.assert_close(got_out, want_out, rtol=1e-5, atol=1e-5)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4 * max(1.0, float(b.abs().max())))
        for m in (layer, fused):
            m.zero_grad(set_to_none=True)
    if backend == 'record':
        # one graph per size class (dynamo specializes a batch of 1); fullgraph: no breaks
        assert graphs and all('convzoo_mm.haar_wtconv_forward' in g for g in graphs), graphs
    frozen = copy.deepcopy(fused).requires_grad_(False)
    x = torch.randn(2, 4, 13, 11, device=DEVICE, requires_grad=True)
    (gx, ) = torch.autograd.grad(torch.compile(frozen, backend='aot_eager')(x).sum(), x)
    layer.requires_grad_(False)
    (want, ) = torch.autograd.grad(layer(x).sum(), x)
    torch.testing.assert_close(gx, want, rtol=1e-5, atol=1e-5)


class _ReportsCuda(torch.Tensor):
    """A CPU tensor that says it is on CUDA: the automatic choice's conditions checked on CI."""

    @property
    def is_cuda(self):
        return True


def test_automatic_choice_conditions_without_a_gpu(monkeypatch):
    from convzoo_mm.layers import wtconv

    def cuda_like(shape=(1, 4, 8, 8), dtype=torch.float32):
        return torch.empty(shape, dtype=dtype).as_subclass(_ReportsCuda)
    layer = WTConv(4, 4, 5, groups=4, wt_levels=2)
    assert layer.uses_fused_kernels(cuda_like())
    assert layer.uses_fused_kernels(cuda_like(dtype=torch.bfloat16))
    assert not layer.uses_fused_kernels(cuda_like(dtype=torch.float64))   # float64: exact path
    assert not layer.uses_fused_kernels(cuda_like((0, 4, 8, 8)))
    assert not WTConv(4, 4, 4, groups=4).uses_fused_kernels(cuda_like())
    assert not WTConv(4, 4, 5, groups=4, wt_type='db2').uses_fused_kernels(cuda_like())
    assert not WTConv(4, 4, 5, groups=4, impl='torch').uses_fused_kernels(cuda_like())
    monkeypatch.setattr(wtconv, 'tracing', lambda: True)                  # export / jit.trace
    assert not layer.uses_fused_kernels(cuda_like())


def test_fused_path_steps_aside_for_portable_graphs():
    """jit.trace (ONNX export, FLOP counters) and torch.export record graphs for use outside
    this process: there the fast-path switch is on and WTConv takes the PyTorch path, while
    torch.compile (same process) keeps the custom ops."""
    from convzoo_mm.ops import tracing

    class Probe(torch.nn.Module):
        def forward(self, x):
            return x + float(tracing())
    x = torch.zeros(2)
    assert Probe()(x).tolist() == [0, 0]
    assert torch.jit.trace(Probe(), x)(x).tolist() == [1, 1]
    assert torch.export.export(Probe(), (x, )).module()(x).tolist() == [1, 1]
    assert torch.compile(Probe(), backend='eager', fullgraph=True)(x).tolist() == [0, 0]
    if CUDA:
        _, fused = _pair(4, 4, 3, 2)
        fused.impl = 'auto'
        graph = str(torch.export.export(fused, (torch.randn(1, 4, 8, 8, device=DEVICE), )).graph)
        assert 'convzoo_mm' not in graph and 'conv2d' in graph


def test_backward_under_copying_saved_tensor_hooks():
    """Saved-tensor hooks (torch.autograd.graph.save_on_cpu, offloading wrappers) hand the
    backward copies of what the forward saved, in the default (NCHW, contiguous) layout; the
    backward must not rely on the saved tensors' layout or on memory past a saved view."""
    layer, fused = _pair(3, 3, 5, 3)
    x = torch.randn(2, 3, 13, 11, device=DEVICE)
    torch.manual_seed(1)
    grad = torch.randn_like(layer(x))
    _, want = _run(layer, x, grad)

    def pack(t):
        return torch.empty(t.shape, dtype=t.dtype, device=t.device).copy_(t)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _, got = _run(fused, x.contiguous(memory_format=torch.channels_last), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4 * max(1.0, float(b.abs().max())))


def test_frozen_parameters_skip_the_weight_gradients(monkeypatch):
    """With every parameter frozen only the input gradient is formed: no subbands kept for the
    weight gradients, no weight-gradient launch, and the input gradient is still exact."""
    layer, fused = _pair(4, 4, 5, 2)
    for m in (layer, fused):
        m.requires_grad_(False)
    x = torch.randn(2, 4, 11, 12, device=DEVICE)
    grad = torch.randn_like(x)
    _, want = _run(layer, x, grad)

    def refuse(*args):
        raise AssertionError('weight gradients formed for frozen parameters')
    monkeypatch.setattr(fused_ops, '_weight_grad', refuse)
    _, got = _run(fused, x, grad)
    assert all(g is None for g in got[1:])
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-4)
