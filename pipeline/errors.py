"""Errors meant for the user: each says what is wrong and where, and the user can act on it.

`stage_main` (and the `pipeline` command) turn exactly these into one clear line and a non-zero
exit. Anything else is a bug in this project or a library, and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """The run cannot go on for a reason the user can fix; the message names the file, key or record.

    `key`, where given, is the params key at fault (dotted; under the dataset's entry for errors
    with `dataset_key`), so that `stage_main`, which knows the params file and the dataset, can
    name both (`in_params`).
    """

    exit_code = 1
    dataset_key = False

    def __init__(self, message: str = "", *, key: str | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key, self.problem = key, message

    def in_params(self, params: object, dataset: str) -> UserError:
        """This error as a params error reads: `file: dotted.key: problem` (itself when it has no key)."""
        if self.key is None:
            return self
        prefix = f"datasets.{dataset}." if self.dataset_key else ""
        return type(self)(f"{params}: {prefix}{self.key}: {self.problem}")


class ParamsError(UserError):
    """A params file that cannot be used: it names the file, the dotted key, what was expected and what was found."""

    exit_code = 2


class SourceError(UserError):
    """A source that cannot be read at all (missing file, missing column); its key is the dataset's."""

    dataset_key = True


class MetadataError(UserError, ValueError):
    """A metadata column train cannot fit as asked (a treatment that needs values train lacks); its key is the dataset's."""

    dataset_key = True


class StageError(UserError):
    """A stage cannot go on with these inputs (too few classes, a missing output of an earlier stage)."""


class SplitError(UserError):
    """The split cannot be made as asked (a class too small, an unknown source split)."""


class AugmenterUnavailable(UserError):
    """An augmenter named in params cannot run on this machine (missing data), with what to install."""


class RebalanceError(UserError):
    """The train split cannot be resampled as asked (too few records for the neighbours a cleaner needs)."""


class ExportError(UserError):
    """The exported model does not reproduce the trained one (ONNX logits differ beyond the tolerance)."""


class DiffError(UserError):
    """A version cannot be read (unknown revision, data not in the DVC cache), with what to do."""


class StorageError(UserError):
    """An output cannot be written: the disk is full, a file size or quota limit was hit, or the folder is read-only."""


class OutOfMemory(UserError):
    """The stage ran out of memory (a MemoryError): it says what bounds a stage's memory."""
