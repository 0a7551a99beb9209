"""State-dict versions (convzoo_mm.layers.state_dict): every layer writes its ``_version`` into the
state dict's metadata, today's state dicts round-trip, checkpoints without a version load as the
oldest layout, and renamed names of older versions are migrated before the load (tested on a
toy layer: no name of WTConv, OctaveConv or DRConv has changed in the project's history, so their
rename tables are empty). DRConv is at version 2 (its basis bank went from 5-D to 3-D, same
numbers): version-1 checkpoints of it load (tested), the other layers are at version 1."""
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from convzoo_mm.layers import DRConv, OctaveConv, WTConv
from convzoo_mm.layers.state_dict import LayerStateDict, StateDictMismatchWarning

LAYERS = {
    'wtconv': lambda: WTConv(4, 4, 3, groups=4, wt_levels=2),
    'wtconv-dense': lambda: WTConv(4, 6, 3, wt_levels=1, wt_type='db2'),
    'octconv': lambda: OctaveConv(4, 6, 3, alpha_in=0.5, alpha_out=0.5),
    'drconv-full': lambda: DRConv(4, 6, 3, padding=1, num_regions=2),
    'drconv-basis': lambda: DRConv(4, 6, 3, padding=1, num_regions=2, generator='basis'),
}


def _without_metadata(state):
    return OrderedDict((k, v.clone()) for k, v in state.items())


@pytest.mark.parametrize('name', LAYERS)
def test_layers_write_their_version(name):
    layer = LAYERS[name]()
    version = 2 if name.startswith('drconv') else 1
    assert type(layer)._version == version and type(layer)._state_dict_renames == {}
    assert layer.state_dict()._metadata['']['version'] == version
    nested = nn.Sequential(nn.Identity(), layer).state_dict()
    assert nested._metadata['1']['version'] == version


@pytest.mark.parametrize('metadata', [True, False], ids=['version-1', 'no-version'])
@pytest.mark.parametrize('load', ['torch', 'mmengine'])
def test_drconv_version_1_basis_bank_loads(metadata, load):
    """DRConv version 1 stored the basis bank as (B, k, k, Cg, out); such a checkpoint (or one
    without a version) loads strictly into today's (B, k*k*Cg, out) bank, same outputs."""
    from mmengine.runner import load_state_dict
    torch.manual_seed(0)
    src = DRConv(4, 6, 3, padding=1, num_regions=2, generator='basis')
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p))
    old = OrderedDict((k, v.clone()) for k, v in src.state_dict().items())
    old['bank'] = old['bank'].view(2, 3, 3, 4, 6)
    if metadata:
        old._metadata = OrderedDict([('', {'version': 1})])
    dst = DRConv(4, 6, 3, padding=1, num_regions=2, generator='basis')
    with pytest.warns(UserWarning, match=r'version 1.*optimizer state.*load_from'):
        if load == 'torch':
            dst.load_state_dict(old, strict=True)
        else:
            load_state_dict(dst, old, strict=True)
    assert old['bank'].dim() == 5  # the caller's dict is not changed
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    # a version-1 bank of another layer is reported with its own shape and the differing option
    wrong = DRConv(4, 8, 3, padding=1, num_regions=2, generator='basis')
    with pytest.raises(RuntimeError, match=r'bank is \(2, 3, 3, 4, 6\) in the checkpoint.*'
                                           r'out_channels=6'):
        wrong.load_state_dict(old)
    # ... also when it has as many elements as this layer's bank (its 2x6 = 12 out-channels
    # of 2 inputs per group: (2, 3, 3, 2, 12); this layer's bank (2, 36, 6))
    other = DRConv(4, 12, 3, padding=1, groups=2, num_regions=2, generator='basis')
    same_size = OrderedDict((k, v.clone()) for k, v in other.state_dict().items())
    same_size['bank'] = same_size['bank'].view(2, 3, 3, 2, 12)
    same_size._metadata = OrderedDict([('', {'version': 1})])
    assert same_size['bank'].numel() == dst.bank.numel()
    with pytest.raises(RuntimeError, match=r'bank is \(2, 3, 3, 2, 12\) in the checkpoint'):
        dst.load_state_dict(same_size)


@pytest.mark.parametrize('name', LAYERS)
@pytest.mark.parametrize('metadata', [True, False], ids=['versioned', 'no-version'])
def test_state_dict_round_trips(name, metadata):
    """Today's state dict, with its metadata or without (version None = the oldest layout),
    loads strictly into a fresh layer, through torch and through mmengine, with the same
    values and outputs."""
    from mmengine.runner import load_state_dict
    torch.manual_seed(0)
    src = LAYERS[name]()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p))  # away from any init
    state = src.state_dict() if metadata else _without_metadata(src.state_dict())
    x = torch.randn(2, 4, 9, 9)
    for load in ('torch', 'mmengine'):
        torch.manual_seed(1)
        dst = LAYERS[name]()
        if load == 'torch':
            result = dst.load_state_dict(state, strict=True)
            assert not result.missing_keys and not result.unexpected_keys
        else:
            load_state_dict(dst, state, strict=True)
        for key, value in src.state_dict().items():
            assert torch.equal(dst.state_dict()[key], value), key
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


# ----------------------------------------------------------------------------- the mechanism
class Toy(LayerStateDict, nn.Module):
    """A layer at version 3 whose history renamed: v2 ``w -> weight`` and ``scale.g ->
    scale.weight`` (in a child module); v3 ``weight -> kernel``."""
    _version = 3
    _state_dict_renames = {2: {'w': 'weight', 'scale.g': 'scale.weight'},
                           3: {'weight': 'kernel'}}

    def __init__(self):
        super().__init__()
        self.kernel = nn.Parameter(torch.zeros(2, 3))
        self.scale = nn.Module()
        self.scale.weight = nn.Parameter(torch.zeros(3))


def _old_checkpoint(version, prefix=''):
    """A state dict in the layout of ``version`` (None: no metadata at all) under ``prefix``."""
    kernel = torch.arange(6.).view(2, 3)
    scale = torch.tensor([7., 8., 9.])
    names = {None: ('w', 'scale.g'), 1: ('w', 'scale.g'), 2: ('weight', 'scale.weight'),
             3: ('kernel', 'scale.weight')}[version]
    state = OrderedDict([(prefix + names[0], kernel), (prefix + names[1], scale)])
    if version is not None:
        state._metadata = OrderedDict([(prefix[:-1], {'version': version}),
                                       (prefix + 'scale', {'version': 1})])
    return state, kernel, scale


@pytest.mark.parametrize('version', [None, 1, 2, 3])
@pytest.mark.parametrize('load', ['torch', 'mmengine'])
@pytest.mark.parametrize('nested', [False, True])
def test_older_layouts_load_into_todays_names(version, load, nested):
    from mmengine.runner import load_state_dict
    toy = Toy()
    model = nn.Sequential(nn.Identity(), toy) if nested else toy
    state, kernel, scale = _old_checkpoint(version, '1.' if nested else '')
    if load == 'torch':
        result = model.load_state_dict(state, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
    else:
        load_state_dict(model, state, strict=True)
    assert torch.equal(toy.kernel, kernel)
    assert torch.equal(toy.scale.weight, scale)


def test_renames_apply_only_above_the_checkpoints_version():
    """A version-3 checkpoint is already in today's layout: a ``weight`` in it is not the old
    name of ``kernel`` (that rename belongs to version 3) but an unexpected entry."""
    state = OrderedDict([('weight', torch.ones(2, 3)), ('scale.weight', torch.ones(3))])
    state._metadata = OrderedDict([('', {'version': 3})])
    toy = Toy()
    with pytest.warns(StateDictMismatchWarning, match='missing: kernel; unexpected: weight'):
        result = toy.load_state_dict(state, strict=False)
    assert result.missing_keys == ['kernel'] and result.unexpected_keys == ['weight']
    assert torch.count_nonzero(toy.kernel) == 0
    # the same names with no version are the version-2 layout's and are migrated
    del state._metadata
    Toy().load_state_dict(state, strict=True)


def test_newer_checkpoint_is_named_when_it_does_not_fit():
    state = OrderedDict([('kernel_v4', torch.ones(2, 3)), ('scale.weight', torch.ones(3))])
    state._metadata = OrderedDict([('', {'version': 4})])
    with pytest.warns(StateDictMismatchWarning, match='newer convzoo_mm.*version 4.*up to 3'):
        Toy().load_state_dict(state, strict=False)
    state._metadata = OrderedDict([('', {'version': 3})])     # today's version: not "newer"
    with pytest.warns(StateDictMismatchWarning) as record:
        Toy().load_state_dict(state, strict=False)
    assert [str(w.message) for w in record if 'newer' in str(w.message)] == []


def test_a_rename_never_overwrites_an_entry_already_under_the_new_name():
    """An unversioned checkpoint holding both ``w`` (the oldest name) and ``kernel``: ``kernel``
    keeps its own value; ``w`` becomes ``weight`` (version 2), which stays unexpected."""
    state = OrderedDict([('w', torch.ones(2, 3)), ('kernel', torch.full((2, 3), 5.)),
                         ('scale.weight', torch.ones(3))])
    toy = Toy()
    with pytest.warns(StateDictMismatchWarning, match=r'unexpected: weight\)'):
        result = toy.load_state_dict(state, strict=False)
    assert result.unexpected_keys == ['weight']
    assert torch.equal(toy.kernel, torch.full((2, 3), 5.))


@pytest.mark.parametrize('version', [0, 2])
def test_rename_table_must_fit_the_version(version):
    with pytest.raises(TypeError, match=rf'versions \[{version}\] outside 1..1'):
        type('Bad', (LayerStateDict, nn.Module), {'_version': 1,
                                                  '_state_dict_renames': {version: {'a': 'b'}}})


def test_published_wtconv_filters_are_dropped_at_any_prefix():
    """WTConv's upgrade hook (the published checkpoints' frozen filters) runs inside the shared
    load, also nested in a model and through mmengine, for a checkpoint without metadata."""
    from mmengine.runner import load_state_dict

    from convzoo_mm.analysis.references import PublishedWTConv2d
    torch.manual_seed(0)
    ref = PublishedWTConv2d(4, 3, 1, True, 2)
    state = OrderedDict(('1.' + k, v) for k, v in ref.state_dict().items())
    assert any(k.endswith('wt_filter') for k in state)
    model = nn.Sequential(nn.Identity(), WTConv(4, 4, 3, groups=4, wt_levels=2))
    load_state_dict(model, state, strict=True)
    assert torch.equal(model[1].wavelet_convs[1].weight, ref.wavelet_convs[1].weight)
