"""mrfbench: train, sweep and compare multimodal VAEs.

The Python API (``mrfbench.api``): ``train``, ``load_run``, ``sweep``, ``load_sweep``, ``leaderboard``; they
are loaded on first use, so ``import mrfbench`` stays light."""

from mrfbench.version import __version__

API = ("Run", "train", "load_run", "sweep", "load_sweep", "leaderboard")


def __getattr__(name: str):
    if name in API:
        from mrfbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'mrfbench' has no attribute '{name}'")


def __dir__() -> list[str]:
    return [*globals(), *API]


__all__ = ["__version__", *API]
