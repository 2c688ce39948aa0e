"""`launchkit archive`."""

from __future__ import annotations

from typing import Any

import click

from launchkit.cli.options import CONTEXT, option
from launchkit.core.errors import UsageError
from launchkit.examples import EXAMPLES


@click.command(context_settings=CONTEXT)
@option("--model-name", help="Name of the model (and of the .mar).")
@click.option("-v", "--version", "version", help="Model version, e.g. 1.0.")
@option("--serialized-file", metavar="FILE", help="TorchScript .pt, or state dict for --model-file.")
@option("--model-file", metavar="FILE", help="Python file with exactly one nn.Module class (eager mode).")
@option("--handler", metavar="FILE[:FUNCTION]", help="Handler .py file (TorchServe contract).")
@option("--extra-files", metavar="A,B,...", help="More files or folders to include, comma-separated.")
@option("--export-path", default=".", show_default=True, metavar="DIR", help="Where to write the archive.")
@click.option("-c", "--config-file", "config_file", metavar="FILE", help="model-config.yaml (batchSize, ...).")
@click.option("-r", "--requirements-file", "requirements_file", metavar="FILE", help="requirements.txt to include.")
@option("--archive-format", type=click.Choice(["default", "zip-store", "no-archive"]), default="default",
        show_default=True)
@option("--runtime", default="python", hidden=True)
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing archive.")
@option("--example", type=click.Choice(EXAMPLES), help="Build a bundled example instead.")
def archive(**params: Any) -> None:
    """Make a model archive (.mar) with torch-model-archiver's flags and layout."""
    if params["example"]:
        from launchkit.examples.build import build_example

        click.echo(build_example(params["example"], params["export_path"], force=params["force"]))
        return
    from launchkit.archive.writing import ArchiveRequest, create_archive

    missing = [flag for flag, key in (("--model-name", "model_name"), ("--version", "version"), ("--handler", "handler"))
               if not params[key]]
    if missing:
        raise UsageError(f"missing {', '.join(missing)} (or use --example {'|'.join(EXAMPLES)})")
    extra = tuple(item for item in (params["extra_files"] or "").split(",") if item)
    path = create_archive(ArchiveRequest(
        model_name=params["model_name"], version=params["version"], handler=params["handler"],
        serialized_file=params["serialized_file"], model_file=params["model_file"], extra_files=extra,
        export_path=params["export_path"], config_file=params["config_file"],
        requirements_file=params["requirements_file"], archive_format=params["archive_format"],
        force=params["force"], runtime=params["runtime"],
    ))
    click.echo(path)
