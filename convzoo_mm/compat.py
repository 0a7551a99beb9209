"""Keep mmengine 0.10.x checkpoints loadable under torch >= 2.6 (``weights_only=True`` default)."""
