"""``wsiseg compare``: evaluation reports side by side (Markdown and JSON), e.g. the paper's Table 1 rows."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("reports", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--label", "labels", multiple=True,
              help="Row name, once per report in order (default: the method or model in the report).")
@click.option("--markdown", type=click.Path(dir_okay=False, path_type=Path), help="Write the table here.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the rows as JSON here.")
def command(reports: tuple[Path, ...], labels: tuple[str, ...], markdown: Path | None,
            json_path: Path | None) -> None:
    """Put `wsiseg evaluate --json` reports side by side: SAM, SAM + post-processing, SAM segment
    everything and SAM-Path variants; micro/macro Dice and IoU, the paper's metrics when the reports
    have them, seconds per image. The table is printed and optionally written.
    """
    from wsiseg.baselines.compare import compare, to_markdown, write_outputs

    rows = compare(list(reports), list(labels) or None)
    click.echo(to_markdown(rows), nl=False)
    write_outputs(rows, markdown, json_path)
