"""FLOPs and parameters of a model, with exact counts for the convzoo layers.

mmengine's :class:`~mmengine.analysis.FlopAnalyzer` traces the model with ``torch.jit`` and counts
each traced op with a handle (1 multiply-accumulate = 1 FLOP, the fvcore convention). It knows
convs, matmuls and norms, but a layer built from several small ops (wavelet transforms, transposed
convs, dynamic per-sample filters, pooled cross paths) is counted only as far as its traced ops
happen to be known. Every convzoo layer therefore implements ``count_flops(input_shape) -> int``
(the FLOP-counting contract, see each layer's docstring).

:class:`LayerAwareFlopAnalyzer` runs the trace with a forward hook on every module that has
``count_flops``; the hook records the shape of the input of each call. After the trace, the
traced count of each such module is replaced by the sum of ``count_flops`` over its calls, and the
difference is applied to all its ancestors (so ``total()``, ``by_module()``, ``by_operator()`` and
mmengine's table stay consistent). Modules are patched deepest first, so a counted module inside
another counted module ends up with its own value and the outer one with exactly its own value.
Rows *below* a counted module keep their traced values (they are informative only).

Beyond mmengine's handles, convs with string padding (``padding='same'``, traced as
``aten::_convolution_mode``) are counted like any conv; mmengine 0.10 counts them as 0.
In ``by_operator()`` a replaced count appears under the layer's class name (e.g. ``WTConv``).
"""
from collections import Counter, defaultdict
from typing import Any, Dict, List, Tuple, Union

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import conv_flop_count, get_shape
from mmengine.analysis.print_helper import _format_size, complexity_stats_table

__all__ = ['LayerAwareFlopAnalyzer', 'get_model_complexity', 'has_flop_counter', 'input_shape_of',
           'format_size']

format_size = _format_size


def conv_mode_flop_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    """Handle for ``aten::_convolution_mode``, the op a conv with string padding
    (``padding='same'`` / ``'valid'``) traces to. mmengine has no handle for it and silently
    counts such convs as 0 FLOPs. Inputs: x, weight, bias, stride, padding, dilation, groups."""
    x_shape, w_shape, out_shape = get_shape(inputs[0]), get_shape(inputs[1]), get_shape(outputs[0])
    return Counter({'conv': conv_flop_count(x_shape, w_shape, out_shape, transposed=False)})


EXTRA_FLOP_HANDLES = {'aten::_convolution_mode': conv_mode_flop_jit}


def has_flop_counter(module: nn.Module) -> bool:
    """Whether ``module`` implements the convzoo FLOP-counting contract."""
    return callable(getattr(module, 'count_flops', None))


def input_shape_of(inputs: Tuple[Any, ...]) -> Any:
    """The ``input_shape`` handed to ``count_flops`` for a call with positional ``inputs``.

    A tensor gives its shape ``(N, C, H, W)``; a tuple/list of tensors (e.g. OctaveConv's
    ``(high, low)`` pair) gives the tuple of their shapes (``None`` for a missing branch).
    """
    first = inputs[0] if len(inputs) else None
    if isinstance(first, torch.Tensor):
        return tuple(int(d) for d in first.shape)
    if isinstance(first, (tuple, list)):
        return tuple(tuple(int(d) for d in t.shape) if isinstance(t, torch.Tensor) else None
                     for t in first)
    raise TypeError(f'cannot read an input shape from a call with {type(first).__name__}')


class LayerAwareFlopAnalyzer(FlopAnalyzer):
    """:class:`~mmengine.analysis.FlopAnalyzer` that takes the FLOPs of every module with
    ``count_flops(input_shape)`` from that method instead of from the traced ops.

    Args:
        model (nn.Module): model to analyse.
        inputs (Tensor | tuple[Tensor]): inputs of ``model.forward``.

    Extra attribute (after the analysis ran): ``layer_records``: dict mapping the module name to
    ``dict(type=str, input_shapes=list, flops=int, traced_flops=int)``.
    """

    def __init__(self, model: nn.Module, inputs: Union[torch.Tensor, Tuple[Any, ...]]) -> None:
        super().__init__(model, inputs)
        self.set_op_handle(**EXTRA_FLOP_HANDLES)
        self.layer_records: Dict[str, Dict[str, Any]] = {}

    def _analyze(self):
        if self._stats is not None:
            return self._stats
        calls: Dict[str, List[Any]] = defaultdict(list)
        modules: Dict[str, nn.Module] = {}
        handles = []
        for module in self._model.modules():
            if has_flop_counter(module):
                name = self._aliases[module]
                modules[name] = module

                def hook(mod, args, output, name=name):
                    calls[name].append(input_shape_of(args))

                handles.append(module.register_forward_hook(hook))
        try:
            stats = super()._analyze()
        finally:
            for h in handles:
                h.remove()
        counts = stats.counts
        records = {}
        # deepest first: an outer counted module is patched after its counted children
        for name in sorted(calls, key=lambda n: -len(n.split('.')) if n else 0):
            module = modules[name]
            flops = int(sum(int(module.count_flops(shape)) for shape in calls[name]))
            old = Counter(counts[name])
            new = Counter({type(module).__name__: flops})
            records[name] = dict(type=type(module).__name__, input_shapes=list(calls[name]),
                                 flops=flops, traced_flops=int(sum(old.values())))
            for anc in self._ancestors(name):
                patched = Counter(counts[anc])
                for op, v in old.items():
                    patched[op] -= v
                for op, v in new.items():
                    patched[op] += v
                counts[anc] = Counter({op: v for op, v in patched.items() if v != 0})
        self.layer_records = records
        return stats

    def _ancestors(self, name: str) -> List[str]:
        """``name`` and all modules that own it ('' is the model)."""
        parts = name.split('.') if name else []
        return ['.'.join(parts[:k]) for k in range(len(parts) + 1)]


def get_model_complexity(model: nn.Module, inputs: Union[torch.Tensor, Tuple[Any, ...]],
                         max_depth: int = 3, show_table: bool = True) -> Dict[str, Any]:
    """FLOPs (MACs) and parameters of ``model`` on ``inputs``, exact for convzoo layers.

    Args:
        model (nn.Module): the model; ``model(*inputs)`` is traced once (no gradients).
        inputs (Tensor | tuple): positional inputs of ``model.forward``.
        max_depth (int): depth of the per-module table. Defaults to 3.
        show_table (bool): build the per-module table (mmengine ``flop_count_table`` layout).

    Returns:
        dict: ``flops`` (int, total), ``params`` (int), ``flops_str``, ``params_str``,
        ``by_module`` (Counter name -> FLOPs), ``by_operator`` (Counter op -> FLOPs),
        ``layers`` (per counted module: type, input shapes, FLOPs, traced FLOPs),
        ``unsupported_ops`` (Counter of traced ops without a handle) and ``table`` (str or '').
    """
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs, )
    analyzer = LayerAwareFlopAnalyzer(model, inputs)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    with torch.no_grad():
        flops = analyzer.total()
        table = complexity_stats_table(analyzer, max_depth=max_depth,
                                       show_param_shapes=False) if show_table else ''
    params = parameter_count(model)['']
    return dict(flops=int(flops), params=int(params), flops_str=format_size(flops),
                params_str=format_size(params), by_module=analyzer.by_module(),
                by_operator=analyzer.by_operator(), layers=dict(analyzer.layer_records),
                unsupported_ops=analyzer.unsupported_ops(), table=table)
