"""Argument checks shared by the layers: every message names the argument and what is allowed."""
import difflib
import functools
import inspect
from typing import Any, Iterable, Optional, Tuple, Union

import torch


def known_options(init):
    """Decorator of a layer's or backbone's ``__init__``: an unknown keyword option (a typo in a
    config, e.g. ``wt_level=2``) is a ``TypeError`` that names it, suggests the closest option
    and lists them all. Python's own message ("unexpected keyword argument") names the key only.
    The signature seen by ``inspect`` stays the original one."""
    params = inspect.signature(init).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise TypeError(f'known_options: {init.__qualname__} takes **kwargs, nothing to check')
    known = [n for n, p in params.items() if n != 'self'
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        unknown = [k for k in kwargs if k not in known]
        if unknown:
            raise TypeError(unknown_options_message(type(self).__name__, unknown, known))
        return init(self, *args, **kwargs)
    return wrapper


def unknown_options_message(owner: str, unknown: Iterable[str], known: Iterable[str]) -> str:
    known = list(known)
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        parts.append(repr(key) + (f' (did you mean {close[0]!r}?)' if close else ''))
    return f'{owner} has no option {", ".join(parts)}; its options are: {", ".join(known)}'


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'{name} must be an int, got {value!r} ({type(value).__name__})')
    return value


def check_int(name: str, value: Any, min_value: int = 1,
              max_value: Optional[int] = None) -> int:
    """Return ``value`` if it is an int in ``[min_value, max_value]``, else raise ValueError."""
    value = _as_int(name, value)
    if value < min_value or (max_value is not None and value > max_value):
        hi = '' if max_value is None else f' and <= {max_value}'
        raise ValueError(f'{name} must be an int >= {min_value}{hi}, got {value}')
    return value


def check_square(name: str, value: Any, min_value: int = 1) -> int:
    """Accept ``k`` or ``(k, k)`` and return ``k``; non-square values are an error."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f'{name} must be an int or a square pair (k, k), got {value!r}')
        value = value[0]
    return check_int(name, value, min_value)


def check_float(name: str, value: Any, low: float, high: float,
                high_inclusive: bool = False) -> float:
    """Return ``value`` as float if ``low <= value < high`` (or ``<= high``), else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f'{name} must be a number, got {value!r}')
    ok = low <= value <= high if high_inclusive else low <= value < high
    if not ok:
        bracket = ']' if high_inclusive else ')'
        raise ValueError(f'{name} must be in [{low}, {high}{bracket}, got {value}')
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f'{name} must be one of {choices}, got {value!r}')
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False`` (not 1, 'auto' or None), else raise."""
    if not isinstance(value, bool):
        raise ValueError(f'{name} must be True or False, got {value!r}')
    return value


def check_divides(name: str, value: int, divisor_name: str, divisor: int) -> None:
    if divisor <= 0 or value % divisor:
        raise ValueError(f'{divisor_name}={divisor} must divide {name}={value}')


def same_padding(kernel_size: int, dilation: int = 1) -> Tuple[int, int]:
    """(before, after) zero padding that keeps the size for a stride-1 conv (PyTorch 'same')."""
    total = dilation * (kernel_size - 1)
    return total // 2, total - total // 2


def check_same_padding(padding: Union[None, str, int, Tuple[int, int]], kernel_size: int,
                       dilation: int = 1) -> None:
    """Layers that only support 'same' padding accept None, 'same', or the int (or square pair)
    that gives 'same' for an odd kernel: ``dilation * (kernel_size - 1) // 2``."""
    if padding is None or padding == 'same':
        return
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and padding[0] == padding[1]:
        padding = padding[0]
    before, after = same_padding(kernel_size, dilation)
    if isinstance(padding, int) and not isinstance(padding, bool) and before == after == padding:
        return
    allowed = "None or 'same'" + ('' if before != after else f' or {before}')
    hint = ('' if padding != 0 else " (mmcv's ConvModule passes padding=0 and pads by itself "
            "for a padding_mode other than 'zeros' and 'circular'; this layer zero-pads "
            "inside, so use padding_mode='zeros')")
    raise ValueError(
        f'padding={padding!r} is not supported: this layer always pads to keep the size '
        f'(kernel_size={kernel_size}, dilation={dilation}); use padding={allowed}{hint}')


def check_input(x: Any, channels: int, layer: str) -> None:
    """Forward-time check: a 4D tensor (N, C, H, W) with ``channels`` channels."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f'{layer}: input must be a torch.Tensor of shape (N, C, H, W), '
                         f'got {type(x).__name__}')
    if x.dim() != 4:
        raise ValueError(f'{layer}: input must be 4D (N, C, H, W), got shape {tuple(x.shape)}')
    if x.shape[1] != channels:
        raise ValueError(f'{layer}: input has {x.shape[1]} channels but in_channels={channels}')


def empty_batch(x: Any) -> bool:
    """Whether ``x`` (a tensor, or OctaveConv's ``(high, low)`` pair: both) is a batch of zero
    samples in eager mode (a recorded graph keeps its batch symbolic)."""
    from ..ops import tracing
    xs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    return (not tracing() and all(isinstance(t, torch.Tensor) for t in xs)
            and all(t.shape[0] == 0 for t in xs))


def empty_batch_forward(forward, x: Any) -> Any:
    """A layer's output for a batch of zero samples (mmdet's mask heads pass one when an image
    has no positive RoI): ``forward`` on one zero sample, sliced to none, plus ``0 * sum(x)``,
    so shapes, dtypes and the autograd graph (zero gradients for the parameters and the input)
    are those of a real call, whatever the fast path would make of an empty tensor."""
    xs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    one = tuple(t.new_zeros((1, *t.shape[1:])) for t in xs)
    out = forward(one if isinstance(x, (tuple, list)) else one[0])
    link = sum(t.sum() for t in xs) * 0
    if isinstance(out, tuple):
        return tuple(y[:0] + link for y in out)
    return out[:0] + link
