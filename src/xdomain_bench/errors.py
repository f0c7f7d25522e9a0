"""Error types. Every message says what went wrong, where, and how to fix it."""

from __future__ import annotations


class XBenchError(Exception):
    """Base class for errors that the CLI reports as one clear line."""


class ConfigError(XBenchError):
    """Unknown name, bad option or malformed card/suite."""


class DataError(XBenchError):
    """A dataset tree, split file, annotation or manifest is missing or malformed."""


class BackboneError(XBenchError):
    """A backbone spec cannot be resolved or its weights cannot be loaded."""


class InputError(XBenchError):
    """Bad user-supplied arrays or files (shapes, NaNs, lengths)."""


def unknown_name(kind: str, name: str, known: list[str]) -> ConfigError:
    """Standard error for an unknown registry name, listing the known ones."""
    return ConfigError(f"unknown {kind} '{name}'; known {kind}s: {', '.join(sorted(known))}")
