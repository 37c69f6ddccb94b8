"""How a failed `eul` command ends: one line on stderr that names the fix, and the exit
status: 2 for bad input, 1 when a store does not answer or the work fails (`eul.cli.args`).
Set EUL_DEBUG=1 to see the full traceback. `eul.cli.main` runs every command through
`run_reported`; `eul demo` runs its `eul audit` through it too."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

from eul.cli.args import EXIT_BAD_INPUT, EXIT_FAILURE, CliError, RunError
from eul.runtime.urls import redacted


def failure_types() -> tuple[type[BaseException], ...]:
    """Errors of the stores and of the work itself: exit status 1, one line."""
    from eul.pipeline.context import PipelineError
    from eul.stores.dvc.dvcstore import DvcError
    from eul.stores.dvc.purge import PurgeError
    from eul.stores.log.schema import LedgerUnavailable
    from eul.stores.registry.settings import RegistryError

    types: list[type[BaseException]] = [
        RunError,
        LedgerUnavailable,
        DvcError,
        PipelineError,
        PurgeError,
        RegistryError,
        ConnectionError,
        TimeoutError,
    ]
    if "mlflow" in sys.modules:
        from mlflow.exceptions import MlflowException

        types.append(MlflowException)
    if "sqlalchemy" in sys.modules:
        from sqlalchemy.exc import SQLAlchemyError

        types.append(SQLAlchemyError)
    return tuple(types)


def one_line(err: BaseException) -> str:
    """The error as one line that ends with what to do, without any password or key."""
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    elif isinstance(err, OSError) and err.filename is not None:
        text = f"{err.strerror or type(err).__name__}: {err.filename}; check the path"
    else:
        text = str(err)
    text = redacted(text.strip())
    return text.splitlines()[0].strip() if text else type(err).__name__


def run_reported(command: Callable[[], int | None]) -> int:
    """Run `command`; its exit status, or that of the error it raised, reported in one line.
    An error that is neither bad input nor a failure of the work is a bug: it propagates."""
    from eul.data.records import DataError

    try:
        code = command()
    except KeyboardInterrupt:
        print("eul: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        failure = failure_types()
        usage = (CliError, DataError, ValueError, KeyError, OSError)
        if not isinstance(err, failure + usage):
            raise
        print(f"eul: error: {one_line(err)}", file=sys.stderr)
        if os.environ.get("EUL_DEBUG"):
            traceback.print_exc()
        if isinstance(err, CliError):
            return err.exit_code
        return EXIT_FAILURE if isinstance(err, failure) else EXIT_BAD_INPUT
    return code or 0
