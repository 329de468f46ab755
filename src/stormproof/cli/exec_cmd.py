"""``stormproof exec``: run one attempt's command under the AWS agent (``aws.agent``).

Batch jobs run it as their command; it is a command of its own (not under ``aws``)
because it is what a container runs, and it must start with nothing but the package.
"""

from __future__ import annotations

import sys

import click

from stormproof.aws.agent_output import MAX_KEPT_BYTES

from .params import duration


@click.command(name="exec", context_settings={"ignore_unknown_options": False})
@click.option("--run", "run", required=True, help="The run's name.")
@click.option("--attempt", "attempt_id", required=True, help="The attempt id, TASK/N.")
@click.option("--status", "status_url", metavar="S3URL", help="Where to write the exit status.")
@click.option("--checkpoints", metavar="URL", help="The checkpoint store (s3://…).")
@click.option("--shell", is_flag=True, help="COMMAND is one string for sh -c.")
@click.option(
    "--poll",
    default="2s",
    show_default=True,
    callback=duration,
    help="How often to look for notices.",
)
@click.option("--no-imds", is_flag=True, help="Not on EC2: look for no notices.")
@click.option(
    "--log-upload",
    default="30s",
    show_default=True,
    callback=duration,
    help="How often the output that grew is uploaded beside --status (aws.log_upload).",
)
@click.option(
    "--log-max-bytes",
    type=click.IntRange(min=2),
    default=MAX_KEPT_BYTES,
    show_default=True,
    help="What is kept and uploaded of each stream at most (its first and last half).",
)
@click.argument("command", nargs=-1, required=True)
def exec_(
    run: str,
    attempt_id: str,
    status_url: str | None,
    checkpoints: str | None,
    shell: bool,
    poll: float,
    no_imds: bool,
    log_upload: float,
    log_max_bytes: int,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND as attempt ATTEMPT of RUN: watch for interruption notices, upload its
    checkpoints, write its exit status. Exits with the command's exit code."""
    from stormproof.aws.agent import Agent, AgentSettings

    if log_upload < 1:
        raise click.BadParameter("must be at least 1 second, like 30s", param_hint="--log-upload")
    if status_url is not None and not status_url.startswith("s3://"):
        raise click.BadParameter(f"{status_url!r} is not an s3:// URL", param_hint="--status")
    if shell and len(command) != 1:
        raise click.BadParameter("with --shell, give the command as one string", param_hint="--")
    settings = AgentSettings(
        run=run,
        attempt_id=attempt_id,
        command=command[0] if shell else list(command),
        status_url=status_url,
        checkpoints=checkpoints,
        poll_s=max(0.05, poll),
        use_imds=not no_imds,
        log_upload_s=log_upload,
        log_max_bytes=log_max_bytes,
    )
    sys.exit(Agent(settings).run())
