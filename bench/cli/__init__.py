"""The ``mrfbench`` command line: one module per group of commands, all on one typer app."""

from __future__ import annotations

from typing import Annotated

import typer

from mrfbench.allocator import reuse_freed_memory
from mrfbench.cli.common import DEBUG, app


def show_version(value: bool) -> None:
    if value:
        from mrfbench.version import __version__

        typer.echo(f"mrfbench {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option(help="show the traceback of an unexpected error instead of logging it")] = False,
    version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                          help="print the version and exit")] = False,
):
    """Train, sample and score multimodal VAEs (MRF MVAE family and baselines)."""
    DEBUG["on"] = debug
    reuse_freed_memory()


from mrfbench.cli import data, runs, sweeps  # noqa: E402,F401  (register the commands)

__all__ = ["app"]
