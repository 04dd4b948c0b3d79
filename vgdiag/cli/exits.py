"""Exit codes: from how a run ended and its findings (--fail-on) to the process's code."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vgdiag.engine.status import RunStatus
from vgdiag.errors import ExitCode

if TYPE_CHECKING:  # records imports numpy, which `vgdiag --help` does without
    from vgdiag.engine.records import Finding


def exit_code_for(findings: list[Finding], fail_on: str) -> ExitCode:
    if fail_on == "none":
        return ExitCode.OK
    from vgdiag.engine.records import severity_rank

    limit = severity_rank(fail_on)
    if any(severity_rank(f.severity) >= limit for f in findings):
        return ExitCode.FINDINGS
    return ExitCode.OK


def exit_code_for_run(status: str, findings: list[Finding], fail_on: str) -> ExitCode:
    """The exit code of a run that ended with `status`: one code per cause."""
    if status == RunStatus.FAILED:
        return ExitCode.TRAINING_FAILED
    if status == RunStatus.INTERRUPTED:
        return ExitCode.INTERRUPTED
    return exit_code_for(findings, fail_on)


def report_exit_code(status: str, findings: list[Finding], fail_on: str) -> ExitCode:
    """`report --fail-on`: a failed run counts as an error-level finding."""
    if status == RunStatus.FAILED and fail_on != "none":
        return ExitCode.FINDINGS
    return exit_code_for(findings, fail_on)
