"""Option callbacks more than one command uses."""

from __future__ import annotations

import click

from stormproof.spec.model import parse_duration


def duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    """A duration option (``90``, ``90s``, ``10m``) as seconds; click names the option in
    the error (``Invalid value for '--poll': …``)."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None
