"""The command-line convention of every entry point: what went wrong in one `error:` line.

    sys.exit(cli.run(body, *args))                   # argparse entry points
    app.run(main, flags_parser=cli.parse_flags)      # absl ones (sweep, train, data); main calls cli.run

Exit 2: a user error, something the user fixes and runs again (USER_ERRORS: a config value, a
flag, a file, a package to install); exit 1: the work failed (FAILURES, e.g. a non-finite loss,
or a command's own verdict such as a failed run); anything else is a bug and keeps its traceback.
absl reports a bad flag value with a usage screen and a missing or failing `--config` file with
chained tracebacks (when the config is first read); `parse_flags` turns either into one line.
"""
from __future__ import annotations

import re
import sys
from typing import Callable

from absl import flags


def _root(e: BaseException) -> BaseException:
    while e.__cause__ is not None or (e.__context__ is not None and not e.__suppress_context__):
        e = e.__cause__ or e.__context__
    return e


# ConfigError is a ValueError; OSError covers unreadable, missing or misplaced files and a cluster address.
USER_ERRORS = (ValueError, OSError, ImportError)
FAILURES = (FloatingPointError,)  # simscale.train.NonFiniteLoss


def run(body: Callable[..., int | None], *args) -> int:
    """body(*args)'s exit status (None: 0), or 2 / 1 after one `error:` line for USER_ERRORS / FAILURES."""
    try:
        return body(*args) or 0
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FAILURES as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def fail(message) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:  # a config file's own error comes as its whole traceback: keep the last line
        section = re.match(r"flag --(config\.[\w.]+)=.*as a ConfigDict", str(e))
        if section:
            fail(f"--{section.group(1)} is a section: set its keys, e.g. --{section.group(1)}.KEY=VALUE")
        lines = [line for line in str(e).splitlines() if line.strip()]
        fail(lines[0] if len(lines) == 1 else f"{lines[0].rstrip(':')}: {lines[-1].strip()}")
    for name in ("config",):
        if name in flags.FLAGS:
            try:
                value = getattr(flags.FLAGS, name)
                if value is not None:  # (not given: the command says whether it needs one)
                    _ = "" in value  # a config file that failed to load raises on first use
            except Exception as e:  # noqa: BLE001 - whatever the config file raised, named in one line
                root = _root(e)
                reason = " ".join(str(root).split())  # one line
                fail(f"--{name}: {reason}")
    return rest
