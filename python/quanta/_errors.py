"""The exceptions quanta raises; their messages are the ``quanta`` command's."""


class QuantaError(Exception):
    """An error of the quanta libraries: bad input (an unknown dataset type,
    a malformed data ID or ``where`` expression, a read parameter the storage
    class does not accept, ...) or a failure of the work (a busy registry, an
    I/O error). The message is the text the ``quanta`` command prints after
    ``error:``."""


class DatasetNotFoundError(QuantaError, LookupError):
    """No dataset of that type and data ID in the collections searched (or
    no dataset with that UUID)."""


# Shown as quanta.QuantaError in tracebacks, where users import them from.
QuantaError.__module__ = "quanta"
DatasetNotFoundError.__module__ = "quanta"
