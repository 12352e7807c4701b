"""Typed errors and the exit codes the three CLIs map them to. Nothing string-matches.

Exit codes (the same for calora-train, calora-export and calora-validate):

====  ==========================================================================================
0     success
1     calora-validate: a parity check failed (the artifact ran; it is wrong)
2     bad input: a file, flag, data set, disk or artifact the user can fix (`CaloraError`)
3     internal error: a bug in calora or a dependency; one line plus where the traceback went
130   interrupted by SIGINT (Ctrl-C); 143 by SIGTERM. No partial output is left behind.
====  ==========================================================================================
"""

EXIT_OK = 0
EXIT_PARITY = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class CaloraError(Exception):
    """Base of every error calora raises on purpose (bad input, mismatched files). The message
    names the file, flag (by its CLI name) or field at fault."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(CaloraError, ValueError):
    """A config field has a value calora cannot use; the message names the field and the value."""


class DataError(CaloraError):
    """A task's data is missing, malformed, or gives an empty split."""


class BackboneError(CaloraError):
    """A backbone cannot be found, loaded or compressed as asked."""


class AdapterMismatchError(CaloraError):
    """An adapter does not fit the backbone it is applied to (names, shapes, or fingerprint)."""


class ArtifactError(CaloraError):
    """A saved task directory, checkpoint, bundle or manifest is missing a file, or a file is corrupt."""


class CheckpointMismatchError(ArtifactError):
    """A checkpoint left by an earlier run was made with other settings than this run's."""


class OutputPathError(CaloraError):
    """An output path would destroy what calora did not write, or cannot be written (full disk,
    read-only, a file in the way)."""


class TrainingDivergedError(CaloraError):
    """Training produced a non-finite loss or weights; nothing is saved."""


class DegenerateModelError(TrainingDivergedError):
    """A trained classifier predicts one class for every validation example; nothing is saved."""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every `with` block cleans up as for Ctrl-C."""
