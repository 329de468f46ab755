"""``stormproof aws setup | teardown | doctor | policy``: the recipe's AWS preparation and cleanup.

Each reads stormproof.yaml (``aws:`` and the pools) like every other command; AWS's
answers are translated to one line each (``aws.clients.explain``), exit 2.
"""

from __future__ import annotations

import json
import sys

import click
from rich.markup import escape

from stormproof.aws.settings import AwsOptions
from stormproof.errors import ConfigError

from .session import Session, common, out, session


def _options(s: Session) -> AwsOptions:
    from stormproof.aws.settings import aws_options
    from stormproof.config import AWS_EXECUTORS, AwsConfig

    config = s.config
    if config.executor not in AWS_EXECUTORS:
        where = config.source or "stormproof.yaml"
        raise ConfigError(
            f"{where}: executor is {config.executor!r}; `stormproof aws` works on the AWS "
            "configuration: set executor: aws_batch or capacity: aws (and an aws: section)"
        )
    return AwsOptions.from_dict(
        aws_options(config.aws or AwsConfig(), config.pools, config.checkpoints, config.capacity)
    )


def _aws(opts: AwsOptions):  # type: ignore[no-untyped-def]  # aws.clients.Aws
    from stormproof.aws.clients import Aws

    return Aws(opts.region)


@click.group()
def aws() -> None:
    """Prepare, check and remove the AWS resources of executor: aws_batch."""


@aws.command()
@click.option("--dry-run", is_flag=True, help="Print every call; make none.")
@common
def setup(dry_run: bool, home: str | None, config_path: str | None) -> None:
    """Create the bucket, roles, compute environments, job queues and interruption queue."""
    from stormproof.aws import infra

    with session(home, config_path) as s:
        opts = _options(s)
        if dry_run:
            import os

            region = (
                opts.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            )
            for call in infra.setup_plan(opts, infra.dry_context(opts, region)):
                out.print(escape(call.show()), highlight=False)
                if call.wait:
                    out.print(f"  (then wait until {escape(call.wait)})")
            return
        aws_ = _aws(opts)
        aws_.require_credentials()
        ctx = _translated(lambda: infra.discover_context(aws_, opts), "discover the network")
        out.print(
            f"setting up project {escape(opts.project)} in {ctx.region} (account {ctx.account})"
        )
        infra.apply(aws_, infra.setup_plan(opts, ctx), lambda line: out.print(escape(line)))
        out.print("done; check it with `stormproof aws doctor`")


@aws.command()
@click.option(
    "--dry-run", is_flag=True, help="Find what is tagged and print the calls; remove nothing."
)
@click.option("--keep-bucket", is_flag=True, help="Keep the bucket and what is in it.")
@common
def teardown(dry_run: bool, keep_bucket: bool, home: str | None, config_path: str | None) -> None:
    """Remove everything tagged with the project (and nothing else)."""
    from stormproof.aws import teardown as td

    with session(home, config_path) as s:
        opts = _options(s)
        aws_ = _aws(opts)
        aws_.require_credentials()
        plan = _translated(
            lambda: td.teardown_plan(aws_, opts, keep_bucket), "find the project's resources"
        )
        if dry_run:
            for call in plan:
                out.print(escape(call.show()), highlight=False)
            if not plan:
                out.print(f"nothing is tagged with project {escape(opts.project)}")
            return
        td.remove(aws_, plan, lambda line: out.print(escape(line)))
        out.print(f"removed {len(plan)} thing(s) of project {escape(opts.project)}")


@aws.command()
@common
def doctor(home: str | None, config_path: str | None) -> None:
    """Check credentials, region, policy, resources and quotas; say what is missing."""
    from stormproof.aws import doctor as dr

    with session(home, config_path) as s:
        opts = _options(s)
        aws_ = _aws(opts)
        marks = {True: "[green]ok[/]", False: "[red]missing[/]", None: "[yellow]unknown[/]"}

        def say(check: dr.Check) -> None:
            out.print(f"{marks[check.ok]:>20}  {escape(check.name)}: {escape(check.detail)}")

        checks = dr.run_checks(aws_, opts, say)
        bad = dr.problems(checks)
        if bad:
            out.print(f"{len(bad)} problem(s): fix them and run `stormproof aws doctor` again")
            sys.exit(1)
        out.print("ready")


@aws.command()
@click.option(
    "--for",
    "principal",
    type=click.Choice(["orchestrator", "job", "setup"]),
    default="orchestrator",
    show_default=True,
    help="Whose policy.",
)
@click.option("--account", default="<account>", help="The account id to put in ARNs.")
@common
def policy(principal: str, account: str, home: str | None, config_path: str | None) -> None:
    """Print the least-privilege IAM policy generated from the configuration."""
    from stormproof.aws import iam

    with session(home, config_path) as s:
        opts = _options(s)
        region = _region(opts) or "<region>"
        if principal == "orchestrator":
            doc = iam.orchestrator_policy(opts, account, region)
        elif principal == "job":
            doc = iam.job_policy(opts)
        else:
            doc = iam.setup_policy(opts, account)
        click.echo(json.dumps(doc, indent=2))


def _region(opts: AwsOptions) -> str | None:
    """The region without asking AWS: the configuration's, else the usual variables."""
    import os

    return opts.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def _translated(fn, what: str):  # type: ignore[no-untyped-def]
    from stormproof.aws.clients import AwsError, explain

    try:
        return fn()
    except AwsError:
        raise
    except Exception as exc:
        if type(exc).__module__.startswith("botocore"):
            raise explain(exc, what, "") from None
        raise
