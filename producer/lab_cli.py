"""The researcher's commands, `compare` and `export`, as standalone click commands.

Register them on the `arcsynth` group with `main.add_command(compare)` and
`main.add_command(export)`. RUN is a run directory: neither command needs Redis. Bad input (not
a run directory, a malformed line, no task in common, a non-empty --out or one that cannot be made)
prints one line naming the file and field and exits 2, before anything is written; the functions
behind them raise `RunReadError` (a ValueError).
"""

from __future__ import annotations

from pathlib import Path

import click

from arcsynth.common.cli_base import UserError
from arcsynth.producer.outputs import out_file_problem
from arcsynth.producer.run_files import RunDirError, check_writable
from arcsynth.producer.summary import RunReadError


class LabError(UserError):
    """Bad input to `compare` or `export`: one line, exit code 2."""


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=Path("compare.html"), show_default=True,
              help="Where to write the chart of the runs' pass@n curves.")
def compare(runs: tuple[Path, ...], out: Path) -> None:
    """Compare runs on their common tasks: score, solved, samples, times, and the tasks only one solved."""
    from arcsynth.producer.compare import compare_runs, comparison_text, write_compare_html

    problem = out_file_problem(out)  # before the table is printed: the command does all of its work or none
    if problem:
        raise LabError(f"option --out: {problem}")
    try:
        check_writable(out)  # nor a folder at its temporary name
        comparison = compare_runs(list(runs))
    except RunReadError as exc:
        raise LabError(str(exc)) from None
    except RunDirError as exc:
        raise LabError(f"option --out: {exc}") from None
    click.echo(comparison_text(comparison))
    try:
        click.echo(f"chart: {write_compare_html(comparison, out)}")
    except RunDirError as exc:  # the folder changed since the check
        raise LabError(f"option --out: {exc}") from None


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="A new (or empty) folder for the examples.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "hf"]), default="jsonl", show_default=True,
              help="jsonl: DIR/examples.jsonl; hf: a Hugging Face datasets folder (load_from_disk).")
def export(run: Path, out: Path, fmt: str) -> None:
    """Export a run's learning data (relabelled examples, refinement pairs) as chat conversations."""
    from arcsynth.producer.export import export_run

    try:
        result = export_run(run, out, fmt)
    except RunReadError as exc:
        raise LabError(str(exc)) from None
    click.echo(f"{result.relabelled} relabelled examples and {result.refinements} refinement pairs in {result.out}")
