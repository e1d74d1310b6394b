"""The ``wsiseg`` command line: a thin Click layer over the Python API.

Sub-commands live in one module each (``wsiseg/cli/<name>.py``, attribute ``command``) and are imported
only when invoked, so ``wsiseg --help`` and ``wsiseg info`` never import torch.

Every user-facing failure (:class:`wsiseg.errors.WsisegError`, a full disk, Ctrl-C) becomes a one-line
message on stderr and a non-zero exit status; only internal bugs show a traceback.
"""

from __future__ import annotations

import errno
import importlib
import re
import sys
from typing import Any

import click

from wsiseg._version import __version__
from wsiseg.errors import WsisegError, one_line

#: name -> (module, one-line help shown by ``wsiseg --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("wsiseg.cli.info", "Show a slide's levels, resolution, tissue fraction and tile counts."),
    "segment": ("wsiseg.cli.segment", "Segment whole slides into an OME-Zarr probability/label pyramid."),
    "export": ("wsiseg.cli.export", "Export a segmentation's labels as QuPath-ready GeoJSON polygons."),
    "train": ("wsiseg.cli.train", "Fine-tune SAM-Path on BCSS, CRAG or a folder of image/mask pairs."),
    "evaluate": ("wsiseg.cli.evaluate", "Report micro/per-class Dice and IoU of a model on a data set."),
    "import-reference": ("wsiseg.cli.import_reference",
                         "Import a model trained with the SAM-Path reference code as a .wsiseg file."),
    "models": ("wsiseg.cli.models", "Name models, set the default one, register SAM/HIPT weights."),
    "qc": ("wsiseg.cli.qc", "Quality control of slides: pen ink and blur, QC images, GeoJSON and a table."),
    "summary": ("wsiseg.cli.summary", "Rebuild a folder's summary.csv: per-slide class areas and shares."),
    "compare": ("wsiseg.cli.compare", "Put evaluation reports side by side (the paper's Table 1 rows)."),
    "demo": ("wsiseg.cli.demo", "Run the whole pipeline on a built-in synthetic slide (no downloads)."),
}


#: The library's option names whose flag is not ``--`` + the name with dashes.
FLAGS: dict[str, str] = {"simplify_um": "--simplify", "min_area_um2": "--min-area",
                         "max_bytes": "--max-file-mb", "qc_settings": "--qc-config"}
_OPTION = re.compile(r"`([a-z_][a-z0-9_]*)(=True)?`")


def as_flags(message: str) -> str:
    r"""A library message with the options it names (:func:`wsiseg.errors.option`: ``\`slide_mpp\```,
    ``\`overwrite=True\```) written as this command line's flags (``--slide-mpp``, ``--overwrite``)."""
    return _OPTION.sub(lambda m: FLAGS.get(m[1], "--" + m[1].replace("_", "-")), message)


class LazyGroup(click.Group):
    """A Click group that imports a sub-command's module only when that command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, _ = COMMANDS[cmd_name]
        command: click.Command = importlib.import_module(module_name).command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_text) for name, (_, help_text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="wsiseg")
def cli() -> None:
    """wsiseg: whole-slide semantic segmentation with SAM-Path."""


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point: run the CLI and turn user-facing failures into one-line errors."""
    try:
        return cli.main(args=argv, prog_name="wsiseg", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("wsiseg: interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except WsisegError as exc:
        click.echo(f"wsiseg: error: {as_flags(one_line(str(exc)))}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("wsiseg: interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            click.echo(f"wsiseg: error: disk full while writing {exc.filename or 'output'}; free space and "
                       "run the same command again to resume", err=True)
        else:
            click.echo(f"wsiseg: error: {one_line(str(exc))}", err=True)
        sys.exit(1)
