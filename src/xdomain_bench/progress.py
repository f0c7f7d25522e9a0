"""Progress bars and the quiet switch, shared by the runner, the demo and demo-clip pretraining.

One rich display per process: a suite bar and the running cell's bar are two rows of it, so that nested
users (a suite running cells, a cell pretraining its backbone) never fight over the terminal. `--quiet`
turns bars and chatter off in this process and in the worker processes it starts (through the environment).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

QUIET_ENV = "XBENCH_QUIET"
_display: Any = None  # the live rich Progress, when one is shown


def set_quiet(on: bool) -> None:
    """Only results and errors from now on (workers spawned later inherit it)."""
    if on:
        os.environ[QUIET_ENV] = "1"
    else:
        os.environ.pop(QUIET_ENV, None)


def is_quiet() -> bool:
    return os.environ.get(QUIET_ENV, "") not in ("", "0")


def chatter():
    """A console for progress lines: silent under --quiet, never wraps piped output mid-line."""
    from rich.console import Console

    return Console(quiet=is_quiet(), soft_wrap=True)


class Bar:
    """A handle on one row of the display; every method is a no-op when the bar is off."""

    def __init__(self, progress: Any = None, task: Any = None) -> None:
        self.progress, self.task = progress, task

    @property
    def enabled(self) -> bool:
        return self.progress is not None

    def update(self, completed: float | None = None, *, advance: float | None = None, info: str | None = None,
               description: str | None = None) -> None:
        if self.progress is None:
            return
        fields: dict[str, Any] = {} if info is None else {"info": info}
        self.progress.update(self.task, completed=completed, advance=advance, description=description, **fields)


def _new_display():
    from rich import progress as rp

    return rp.Progress(rp.TextColumn("{task.description}"), rp.BarColumn(bar_width=30), rp.MofNCompleteColumn(),
                       rp.TextColumn("{task.fields[info]}"), rp.TimeElapsedColumn(), rp.TextColumn("ETA"),
                       rp.TimeRemainingColumn(), console=chatter(), transient=True)


@contextlib.contextmanager
def bar(description: str, total: int, enabled: bool = True) -> Iterator[Bar]:
    """A row counting `total` units with elapsed time and ETA, on the process's display (started here when
    none is live); removed when the block ends. Off under --quiet or when `enabled` is false."""
    global _display
    if not enabled or is_quiet():
        yield Bar()
        return
    own = _display is None
    if own:
        _display = _new_display()
        _display.start()
    task = _display.add_task(description, total=max(0, int(total)), info="")
    try:
        yield Bar(_display, task)
    finally:
        _display.remove_task(task)
        if own:
            _display.stop()
            _display = None


def quiet_libraries() -> None:
    """No Lightning banners or tips ("GPU available", "💡 Tip", model summaries) and no loading bars from
    transformers; under --quiet, no library warnings either."""
    import logging
    import warnings

    import lightning.pytorch  # noqa: F401  (it sets its loggers' levels on import; ours must come after)

    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module=r"lightning\.pytorch\.utilities\._pytree")
    if is_quiet():
        warnings.filterwarnings("ignore", module=r"(lightning|torch|transformers)\b")
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
