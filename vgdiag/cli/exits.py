"""--fail-on: from findings to the process exit code."""

from __future__ import annotations

from vgdiag.engine.records import Finding, severity_rank
from vgdiag.errors import ExitCode


def exit_code_for(findings: list[Finding], fail_on: str) -> ExitCode:
    if fail_on == "none":
        return ExitCode.OK
    limit = severity_rank(fail_on)
    if any(severity_rank(f.severity) >= limit for f in findings):
        return ExitCode.FINDINGS
    return ExitCode.OK


