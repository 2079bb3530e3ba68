"""The `invar` command: parse, call the library, render.

Each command group lives in its own module and knows nothing of this one; this module
builds the group and maps invar's errors to exit codes (common.EXIT_CODES) in `main`.
"""
from __future__ import annotations

import sys
import traceback
from typing import List, Optional

import click

from invariants import __version__
from invariants.app.cli import corpus, distributed, files, probe, report, run, shapes, stored
from invariants.app.cli.common import EXIT_HELP, Exit, err, exit_code
from invariants.errors import InvarError


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_HELP)
@click.version_option(__version__, prog_name="invar")
def cli() -> None:
    """invar: catch silent bugs in PyTorch training pipelines.

    Learn invariants from a few known-good reference runs (`infer`), review them as a
    file (`export`, `diff`), and check new or changed pipelines against them (`check`).
    Scripts run unmodified: arguments after `--` go to the script.
    """


for _command in (run.trace, stored.runs, stored.show, stored.sets, run.infer, run.check, files.export,
                 files.diff, shapes.shapes, probe.probe, corpus.eval_, corpus.bench, corpus.demo, report.report,
                 distributed.merge):
    cli.add_command(_command)


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point: invar's errors become one-line messages and exit codes."""
    try:
        cli.main(args=argv, prog_name="invar", standalone_mode=False)
    except click.exceptions.Abort:
        err("invar: aborted")
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(Exit.BAD_INPUT)
    except InvarError as e:
        err(f"invar: {e}")
        sys.exit(exit_code(e))
    except SystemExit:
        raise
    except KeyboardInterrupt:
        err("invar: interrupted")
        sys.exit(130)
    except Exception:
        err("invar: internal error — please report it with the traceback below:")
        err(traceback.format_exc().rstrip())
        sys.exit(Exit.INTERNAL)
