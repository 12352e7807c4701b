"""Typed errors. CLIs catch `CaloraError` and print its message on one line; nothing string-matches."""


class CaloraError(Exception):
    """Base of every error calora raises on purpose (bad input, mismatched files)."""


class ConfigError(CaloraError, ValueError):
    """A config field has a value calora cannot use; the message names the field and the value."""


class DataError(CaloraError):
    """A task's data is missing, malformed, or gives an empty split."""


class BackboneError(CaloraError):
    """A backbone cannot be found, loaded or compressed as asked."""


class AdapterMismatchError(CaloraError):
    """An adapter does not fit the backbone it is applied to (names, shapes, or fingerprint)."""


class ArtifactError(CaloraError):
    """A saved task directory is missing a file, or a file is corrupt."""
