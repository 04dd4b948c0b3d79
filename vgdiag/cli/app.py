"""The vgdiag command line (Typer). The dashboard is imported only where it opens."""

from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Annotated

import typer

try:  # typer >= 0.29 vendors click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer with click installed
    import click.exceptions as click_exc  # type: ignore[no-redef]

from vgdiag._version import __version__
from vgdiag.cli.commands import compare, export, inspect, plugins, report, run, view
from vgdiag.cli.state import STATE
from vgdiag.engine.interrupts import (
    describe_exit,
    ignore_signals,
    interrupt_on_signals,
    is_user_exit,
    restore_signals,
    signal_received,
)
from vgdiag.errors import ExitCode, RunFolderError, SaidByRankZero, UserError
from vgdiag.textfmt import one_line
from vgdiag.torchrun_env import not_rank_zero

app = typer.Typer(
    name="vgdiag",
    help="Find vanishing and exploding gradients in PyTorch models, see where they "
    "happen, and prove which fix works.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    rich_markup_mode="rich",  # help texts are escaped where they are declared
    add_completion=False,
    pretty_exceptions_enable=False,
)



def _version(value: bool) -> None:
    if value:
        print(f"vgdiag {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks for errors.")
    ] = False,
) -> None:
    STATE.debug = debug


app.command("run")(run.run)
app.command("inspect")(inspect.inspect)
app.command("report")(report.report)
app.command("plugins")(plugins.plugins_command)
app.command("compare")(compare.compare)
app.command("view")(view.view)
app.command("export")(export.export)

# ----- entry point --------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run one command: user errors are one line on stderr and exit code 2."""
    saved = interrupt_on_signals()
    try:
        return _main(argv)
    except KeyboardInterrupt:  # a signal that landed while the outcome was being told
        print("vgdiag: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    finally:
        restore_signals(saved)


def entry() -> None:
    """The `vgdiag` program: main(), then an exit that a late signal cannot turn into a
    death by that signal (the run's outcome is already told and its folder written)."""
    code = int(ExitCode.INTERRUPTED)
    try:
        code = main()
    except KeyboardInterrupt:
        print("vgdiag: interrupted", file=sys.stderr)
    finally:
        ignore_signals()
    sys.exit(code)


_RANK_ZERO_GRACE_S = 2.0


def _main(argv: list[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    STATE.debug = "--debug" in args or bool(os.environ.get("VGDIAG_DEBUG"))
    if "--debug" in args:  # the root's option, accepted anywhere: `vgdiag run ... --debug`
        args = ["--debug", *(a for a in args if a != "--debug")]
    try:
        # The command is invoked here rather than through app(): Typer's own main
        # turns a KeyboardInterrupt into a silent exit 130 and a broken pipe into
        # exit 1, so neither a real Ctrl-C nor user code raising it could be told.
        command = typer.main.get_command(app)
        with command.make_context("vgdiag", args) as root:
            result = command.invoke(root)
        return int(result) if isinstance(result, int) else 0
    except typer.Exit as exc:
        return int(exc.exit_code)
    except click_exc.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        # The option parser words a bad choice "Value error, ..."; the help it printed
        # for a bare `vgdiag` comes with an empty message.
        message = one_line(exc.format_message()).replace("Value error, ", "")
        if not_rank_zero() and ctx is not None and ctx.command.name == "run":
            return _leave_it_to_rank_zero()  # every rank parsed the same command line
        print(f"vgdiag: error: {message or 'no command given'}{hint}", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    except UserError as exc:
        _debug_traceback()
        if signal_received():
            return _interrupted(exc)
        if isinstance(exc, SaidByRankZero):
            return _leave_it_to_rank_zero()
        print(f"vgdiag: error: {one_line(str(exc))}", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    except (typer.Abort, KeyboardInterrupt) as exc:
        if isinstance(exc, KeyboardInterrupt) and is_user_exit(exc):
            return _user_exit(exc)
        print("vgdiag: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except SystemExit as exc:  # never ours (Typer's exits are typer.Exit): the user's code
        if isinstance(exc.__context__, BrokenPipeError):  # rich's answer to `| head`
            return int(ExitCode.OK)
        return _user_exit(exc)
    except RunFolderError as exc:  # the folder says so too, where it still could
        print(f"vgdiag: error: {exc}", file=sys.stderr)
        return int(ExitCode.TRAINING_FAILED)
    except BrokenPipeError:  # `vgdiag ... | head`: the reader left; say nothing more
        from vgdiag.cli.headless import silence_stdout

        silence_stdout()
        return int(ExitCode.OK)
    except Exception as exc:  # the user's code (or ours) raised outside training
        _debug_traceback()
        if signal_received():
            return _interrupted(exc)
        hint = "" if STATE.debug else " (run with --debug for the traceback)"
        print(f"vgdiag: error: {type(exc).__name__}: {one_line(str(exc))}{hint}",
              file=sys.stderr)
        return int(ExitCode.TRAINING_FAILED)


def _debug_traceback() -> None:
    """Under --debug, the traceback of the error being handled, on stderr. The exit
    code stays the one without --debug: a CI job that turns it on to see more must
    not read bad input (2) as a failed gate (1)."""
    if STATE.debug:
        traceback.print_exc(file=sys.stderr)


def _leave_it_to_rank_zero() -> int:
    """Exit 2 without a word: rank 0 prints the line. torchrun stops every rank once one
    has exited, so this one waits a moment first, lest rank 0 be stopped mid-sentence;
    the SIGTERM torchrun then sends it once rank 0 has exited ends it as it would have
    ended (exit 2), not as an interruption."""
    import signal

    def quietly(signum: int, frame: object) -> None:
        os._exit(int(ExitCode.BAD_INPUT))

    saved = {sig: signal.signal(sig, quietly) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        time.sleep(_RANK_ZERO_GRACE_S)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    return int(ExitCode.BAD_INPUT)


def _interrupted(exc: BaseException) -> int:
    """An error after a signal: a Ctrl-C that landed inside an import leaves the module
    half made, and the next import of it fails (RecursionError, ImportError). The exit
    code is the interruption's; the error is still said, in case it was not."""
    print(f"vgdiag: interrupted (then: {type(exc).__name__}: {one_line(str(exc), 160)})",
          file=sys.stderr)
    return int(ExitCode.INTERRUPTED)


def _user_exit(exc: BaseException) -> int:
    """User code exited (or raised KeyboardInterrupt) where no boundary caught it."""
    _debug_traceback()
    print(f"vgdiag: error: the model's or data's code raised {describe_exit(exc)}: "
          "vgdiag counts that as a failure, not a success", file=sys.stderr)
    return int(ExitCode.TRAINING_FAILED)


if __name__ == "__main__":
    sys.exit(main())
