"""What every convzoo backbone shares with mm's backbones."""
import torch.nn as nn
from mmengine.model import BaseModule


class FreezableBackbone(BaseModule):
    """mm backbone train-mode semantics: ``frozen_stages`` stay frozen and, with ``norm_eval``,
    every BatchNorm stays in eval mode while the model trains. Subclasses define
    ``_freeze_stages()`` and set ``self.norm_eval``."""

    def _freeze_stages(self) -> None:
        raise NotImplementedError

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self
