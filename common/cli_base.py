"""What every `arcsynth` command shares: one-line user errors (exit 2) and settings read once.

User errors (bad task files, bad settings, missing model) print one line and exit with code 2,
before anything is enqueued; tracebacks are for bugs only.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from arcsynth.common.env_file import EnvFileError, check_env_file
from arcsynth.common.settings import ENV_FILE, Settings, unknown_variable
from arcsynth.common.text import escape


class UserError(click.ClickException):
    """A user error: printed as `error: MESSAGE` on one line (control characters escaped), exit code 2."""

    exit_code = 2

    def show(self, file=None) -> None:  # one line, no "Usage:" banner
        click.echo(f"error: {escape(self.message)}", err=True)


class Failure(click.ClickException):
    """A run or its workers failed (not the user's input): printed as `error: MESSAGE` on one line,
    like a user error, with exit code 1."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"error: {escape(self.message)}", err=True)


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange that also refuses NaN and infinity (NaN passes every comparison with a bound)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def repeated_option(command: click.Command, parent: click.Context, args: list[str]) -> str | None:
    """The first option of `command` that `args` give more than once though it takes one value (click
    would keep the last one silently), as the user spelled it the first time; None when there is none.

    Options that collect (`multiple`, `count`) may repeat; `--help` may too. Parse errors are left to
    the command's own parsing.
    """
    probe = click.Context(command, info_name=command.name, parent=parent, resilient_parsing=True)
    try:
        _, _, order = command.make_parser(probe).parse_args(args=list(args))
    except click.UsageError:
        return None
    for param, times in Counter(order).items():
        if (times > 1 and isinstance(param, click.Option) and not param.multiple and not param.count
                and param.name != "help"):
            given = [a.split("=", 1)[0] for a in args if a.split("=", 1)[0] in (*param.opts, *param.secondary_opts)]
            return given[0] if given else param.opts[-1]
    return None


class OneLineErrors(click.Group):
    """A bad option value is a user error like any other: one line naming the option, exit 2. So is an
    option that takes one value given twice (`repeated_option`). Its subgroups are of this class too."""

    group_class = type

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None and not isinstance(command, click.Group):
            option = repeated_option(command, ctx, rest)
            if option is not None:
                raise UserError(f"option {option} is given more than once; give it once")
        return name, command, rest

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise UserError(exc.format_message()) from None


def model_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback for a worker's `--model`: the rules of `ARCSYNTH_MODEL` (not empty, no control
    character), checked before anything starts."""
    if value is not None:
        try:
            Settings._model_named(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    return value


def first_error(exc: ValidationError) -> tuple[tuple[Any, ...], str]:
    """The location and message of a validation error's first problem (without pydantic's "Value error, ")."""
    err = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    return tuple(err["loc"]), err["msg"].removeprefix("Value error, ")


def setting_name(field: str) -> str:
    return f"ARCSYNTH_{field.upper()}"


def load_settings() -> Settings:
    """The process's settings (environment and `.env`); a bad value, an `ARCSYNTH_…` name that is no
    setting, or a `.env` line that is not UTF-8 or not NAME=value, is a one-line user error."""
    unknown = next(filter(None, map(unknown_variable, sorted(os.environ))), None)
    if unknown:
        raise UserError(f"environment: {unknown}")
    try:
        check_env_file(Path(ENV_FILE))
        return Settings()
    except EnvFileError as exc:
        raise UserError(str(exc)) from None
    except ValidationError as exc:
        loc, msg = first_error(exc)
        if not loc:  # a rule across settings; its message names them
            raise UserError(f"settings: {msg}") from None
        raise UserError(f"setting {setting_name(str(loc[0]))}: {msg}") from None


def settings() -> Settings:
    """The command's settings: read on first use, then kept on the root click context (once per process)."""
    obj = click.get_current_context().find_root().ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings()
    return obj["settings"]


def need_broker(s: Settings) -> Settings:
    if s.broker_url is None:
        raise UserError("setting ARCSYNTH_BROKER_URL is not set (or use `arcsynth local`)")
    return s
