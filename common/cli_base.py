"""What every `arcsynth` command shares: one-line user errors (exit 2) and settings read once.

User errors (bad task files, bad settings, missing model) print one line and exit with code 2,
before anything is enqueued; tracebacks are for bugs only.
"""

from __future__ import annotations

import click
from pydantic import ValidationError

from arcsynth.common.settings import Settings


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:  # one line, no "Usage:" banner
        click.echo(f"error: {self.message}", err=True)


def load_settings() -> Settings:
    """The process's settings (environment and `.env`); a bad value is a one-line user error."""
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        if not err["loc"]:  # a rule across settings; its message names them
            raise UserError(f"settings: {err['msg'].removeprefix('Value error, ')}") from None
        raise UserError(f"setting ARCSYNTH_{str(err['loc'][0]).upper()}: {err['msg']}") from None


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
