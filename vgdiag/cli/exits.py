"""--fail-on: from findings to the process exit code."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
