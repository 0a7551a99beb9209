"""State-dict versions and load-time explanations, shared by the layers (:class:`LayerStateDict`).

**Versions.** Each layer class sets ``_version`` (PyTorch writes it into the state dict's
``_metadata`` under the layer's prefix: ``local_metadata['version']``) and
``_state_dict_renames = {v: {old: new}}``: the names (relative to the layer, dots allowed) that
version ``v`` renamed. When a checkpoint loads, the renames of every version above the
checkpoint's own are applied in order, so a checkpoint of any older layout loads under today's
names. A checkpoint without a version (no ``_metadata``, e.g. written by a conversion script or
built by hand) counts as the oldest layout, 0. To rename a parameter or buffer: bump
``_version`` and add the old -> new names under the new version. What a rename cannot express
goes into :meth:`LayerStateDict._upgrade_state_dict` (WTConv drops the published checkpoints'
frozen filters there).

No name of WTConv, OctaveConv or DRConv has changed since they were written (``git log -p`` of
``convzoo_mm/layers``), so all three have empty rename tables. WTConv and OctaveConv are at
version 1; DRConv is at version 2, whose ``_upgrade_state_dict`` reshapes a version-1 basis
bank ``(B, k, k, Cg, out)`` to today's ``(B, k*k*Cg, out)`` (a 5-D parameter made
``Module.to(memory_format=torch.channels_last)`` fail).

**Explanations.** When a checkpoint has entries under a layer but they do not fit it (missing,
unexpected or of another shape), the layer reports one message with its full name that says which
of its config options explain the difference: the layer's ``_options_from_shapes`` reads the
options (``wt_levels``, ``kernel_size``, ...) off a state dict's shapes, for the checkpoint and
for the layer itself, and the message lists those that differ (or says that the checkpoint holds
another layer's entries there). A shape mismatch is an error of the load anyway, so the message
joins the load's errors (``nn.Module.load_state_dict`` raises them; mmengine's
``load_checkpoint``, used by ``load_from`` and ``init_cfg=dict(type='Pretrained')``, warns with
``strict=False``). Missing or unexpected names alone are not (``strict=False`` allows them, and
both loaders call ``_load_from_state_dict`` with ``strict=True`` whatever the caller asked, so a
layer cannot tell): the message is a :class:`StateDictMismatchWarning` next to the loader's own
list of keys. A checkpoint with nothing under the layer (a partial checkpoint) adds nothing.
"""
import warnings
from typing import Any, Dict, List, Optional, Sequence

import torch

__all__ = ['LayerStateDict', 'StateDictMismatchWarning', 'migrate_state_dict']


class StateDictMismatchWarning(UserWarning):
    """A checkpoint's entries under a layer do not fit it (names only; see the module doc)."""

Shapes = Dict[str, torch.Size]


def migrate_state_dict(state_dict: Dict[str, Any], prefix: str, version: Optional[int],
                       renames: Dict[int, Dict[str, str]]) -> List[str]:
    """Rename, in place, the entries ``prefix + old`` of a checkpoint saved at ``version``
    (None = the oldest layout) to ``prefix + new`` for every version above it, oldest first.
    Returns the new names (relative) that were filled."""
    done = []
    for v in sorted(renames):
        if version is not None and v <= version:
            continue
        for old, new in renames[v].items():
            if prefix + old in state_dict and prefix + new not in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
                done.append(new)
    return done


def _shape_text(shape: Sequence[int]) -> str:
    return '(' + ', '.join(str(int(v)) for v in shape) + ')'


class LayerStateDict:
    """Mixin (before ``nn.Module`` in the bases) with the versioned, explained state-dict load of
    the layers; see the module docstring."""

    _version = 1
    _state_dict_renames: Dict[int, Dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        bad = [v for v in cls._state_dict_renames if not 1 <= v <= cls._version]
        if bad:
            raise TypeError(f'{cls.__name__}._state_dict_renames has versions {bad} outside '
                            f'1..{cls._version} (_version)')

    # -- hooks of the layers ----------------------------------------------------------------
    def _upgrade_state_dict(self, state_dict: Dict[str, Any], prefix: str,
                            version: Optional[int], error_msgs: List[str]) -> None:
        """Changes of layout that are not renames (in place); default: none."""

    @staticmethod
    def _options_from_shapes(shapes: Shapes) -> Optional[Dict[str, Any]]:
        """The layer options that a state dict's shapes (names relative to the layer) imply,
        or None if they are not this layer's entries. Default: unknown (None)."""
        return None

    # -- the load ------------------------------------------------------------------------------
    def _own_shapes(self) -> Shapes:
        shapes = {}
        for name, module in self.named_modules():
            pre = name + '.' if name else ''
            for key, p in module._parameters.items():
                if p is not None:
                    shapes[pre + key] = p.shape
            for key, b in module._buffers.items():
                if b is not None and key not in module._non_persistent_buffers_set:
                    shapes[pre + key] = b.shape
        return shapes

    def _explain_mismatch(self, state_dict, prefix: str, version: Optional[int],
                          error_msgs: List[str]) -> None:
        saved = {k[len(prefix):]: v.shape for k, v in state_dict.items()
                 if k.startswith(prefix) and isinstance(v, torch.Tensor)
                 and not k.endswith('_extra_state')}
        if not saved:  # nothing of this layer in the checkpoint: the load lists the keys
            return
        own = self._own_shapes()
        missing = sorted(set(own) - set(saved))
        unexpected = sorted(set(saved) - set(own))
        reshaped = sorted(k for k in set(own) & set(saved) if own[k] != saved[k])
        if not (missing or unexpected or reshaped):
            return
        where = f'{prefix[:-1]} ({type(self).__name__})' if prefix else type(self).__name__
        facts = [f'{label}: {", ".join(names)}' for label, names in (
            ('missing', missing), ('unexpected', unexpected)) if names]
        facts += [f'{k} is {_shape_text(saved[k])} in the checkpoint, {_shape_text(own[k])} '
                  f'here' for k in reshaped]
        msg = f'{where}: the checkpoint does not fit this layer ({"; ".join(facts)})'
        theirs, mine = self._options_from_shapes(saved), self._options_from_shapes(own)
        if theirs is None and mine is not None:
            held = ', '.join(f'{k} {_shape_text(saved[k])}' for k in sorted(saved)[:4])
            msg += (f': the checkpoint holds {held}{", ..." if len(saved) > 4 else ""} here, '
                    f'not a {type(self).__name__}\'s entries; it was saved with another layer in '
                    f'this slot: check the config\'s layer type and options (e.g. '
                    f'model.backbone.dcn / conv_cfg) against the checkpoint')
        elif theirs is not None and mine is not None:
            diff = [k for k in mine if k in theirs and mine[k] != theirs[k]]
            if diff:
                msg += (': the checkpoint was saved with '
                        + ', '.join(f'{k}={theirs[k]!r}' for k in diff)
                        + ', this layer was built with '
                        + ', '.join(f'{k}={mine[k]!r}' for k in diff)
                        + '; build it with the checkpoint\'s options or load a checkpoint '
                          'trained with these')
        if version is not None and version > self._version:
            msg += (f' (the checkpoint was written by a newer convzoo_mm: {type(self).__name__} '
                    f'state-dict version {version}, this one reads up to {self._version})')
        if reshaped:
            error_msgs.append(msg)
        else:
            warnings.warn(msg, StateDictMismatchWarning, stacklevel=2)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        version = local_metadata.get('version')
        migrate_state_dict(state_dict, prefix, version, self._state_dict_renames)
        self._upgrade_state_dict(state_dict, prefix, version, error_msgs)
        self._explain_mismatch(state_dict, prefix, version, error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
