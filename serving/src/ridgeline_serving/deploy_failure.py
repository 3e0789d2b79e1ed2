"""Why a Serve application failed to deploy, in words for ``ridgeline serve``'s terminal.

``serve.run`` raises only "Failed to update the deployments ['model']"; the replica's own
exception is in the deployment's status message (and in Ray's logs, which a local run sends
to files, not the terminal)."""

from __future__ import annotations

import re
import textwrap

# Lines of the exception a person sees; the rest of a long message is in Ray's logs.
MAX_LINES = 12

# A traceback's frame line: '  File "/path/x.py", line 12, in f'.
_FRAME = re.compile(r'^\s+File "(?P<path>[^"]*)", line (?P<line>\d+)')
# Ridgeline's own modules, named from the package down (the rightmost match of the path).
_OURS = re.compile(r".*/(?P<module>ridgeline(?:_serving|_operator)?/[\w/]+\.py)$")


def exception_text(error: str) -> str:
    """The exception that ends a Python traceback in ``error`` ("OSError: ..." and any lines it
    continues on) and where in Ridgeline's code it was raised, or the text itself where it
    holds no traceback."""
    lines = error.splitlines()
    frames = [i for i, line in enumerate(lines) if _FRAME.match(line)]
    where = _where(lines, frames)
    if frames:
        # After the last frame: its indented source line and carets, then the exception.
        rest = lines[frames[-1] + 1 :]
        while rest and (not rest[0].strip() or rest[0].startswith((" ", "\t"))):
            rest = rest[1:]
        lines = rest or lines
    kept = textwrap.dedent("\n".join(line for line in lines if line.strip())).splitlines()
    if len(kept) > MAX_LINES:
        kept = [*kept[:MAX_LINES], f"... ({len(kept) - MAX_LINES} more lines in Ray's logs)"]
    if where:
        kept.append(f"  at {where}")
    return "\n".join(kept)


def _where(lines: list[str], frames: list[int]) -> str | None:
    """The deepest frame in Ridgeline's code: ``module.py:LINE: source``. The library frames
    under it say less to a user than the call that reached them."""
    for i in reversed(frames):
        match = _FRAME.match(lines[i])
        ours = _OURS.match(match["path"]) if match else None
        if match and ours:
            after = lines[i + 1] if i + 1 < len(lines) else ""
            # Frames of code without source (a .pyc alone) have no line under them.
            source = "" if _FRAME.match(after) or not after[:1].isspace() else after.strip()
            return f"{ours['module']}:{match['line']}" + (f": {source}" if source else "")
    return None


def failure_cause(app_name: str) -> str | None:
    """The failing deployments' replica errors from Serve's status, or None where Serve has
    none to give (the application is gone, or failed before any replica started)."""
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is None:
        return None
    causes = [
        exception_text(_after_error_marker(d.message))
        for d in app.deployments.values()
        # DeploymentStatus is a str enum that ray.serve exports only from a private module.
        if d.status in ("DEPLOY_FAILED", "UNHEALTHY") and d.message
    ]
    if causes:
        return "\n".join(causes)
    # A failure while building the application (not in a replica) has its traceback here.
    return exception_text(app.message) if app.message else None


def _after_error_marker(message: str) -> str:
    """Serve prefixes the replica's error with its own sentence ("... failed to start 3 times
    in a row ... Error:\\n"); the error follows the marker."""
    head, marker, tail = message.partition("Error:\n")
    return tail if marker else head
