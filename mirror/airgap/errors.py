"""The air-gap exceptions, one tree; the CLI maps each to a line and an exit status.

Exit 1 is for a run that did part of its work (images skipped or refused);
an exception stops the run (:mod:`mirror.cli_airgap`)::

    AirgapError                  (exit 3 unless said otherwise)
    ├── SelectionError           a bad --image, --file, --upstream or --repository (exit 2)
    ├── LayoutError              the layout cannot be read as one: no ``oci-layout``,
    │                            no or unreadable ``index.json``, a bad summary
    ├── BaseMissing              an incremental layout whose base this cache lacks
    ├── BudgetExceeded           an import that does not fit the cache budget, or that
    │                            would evict cached images without --allow-evict
    ├── CacheFailed              the cache's storage failed during an import
    └── ExportError              the export cannot be made: the destination exists, the
                                 cache's bytes do not match their digest

Damaged objects inside a readable layout are not exceptions: the importer
names them in its report and imports everything else.
"""

from __future__ import annotations


class AirgapError(Exception):
    """Base of every error an export or an import raises on purpose."""


class SelectionError(AirgapError):
    """A selection flag names no valid image, upstream or pattern."""


class LayoutError(AirgapError):
    """The layout as a whole cannot be read."""


class BaseMissing(AirgapError):
    """An incremental layout relies on blobs of an earlier export that are not here."""


class BudgetExceeded(AirgapError):
    """An import refused up front: it does not fit the cache budget, or would evict."""


class CacheFailed(AirgapError):
    """The cache's storage refused a manifest or tag record; nothing half-written is visible."""


class ExportError(AirgapError):
    """The export was stopped; a directory or file destination is left untouched."""
