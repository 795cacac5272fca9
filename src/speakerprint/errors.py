"""Exception types shared across the package.

Every error a user can cause by bad input derives from :class:`SpeakerprintError`, so the CLI can
print it as one line instead of a traceback.
"""

from __future__ import annotations


class SpeakerprintError(Exception):
    """Base class of errors caused by input (files, configs, manifests), not by bugs."""


class ConfigError(SpeakerprintError, ValueError):
    """A config file or override is malformed: unknown key, wrong type, bad value."""


class ManifestError(SpeakerprintError, ValueError):
    """A manifest or trial list is malformed. The message lists every bad line, not only the first."""


class BundleError(SpeakerprintError, ValueError):
    """A model bundle or checkpoint is missing, incomplete, corrupt or from another version."""


class QuantizationError(ConfigError):
    """A quantised model that strays too far from the float model it was made from."""


class ModelUnavailableError(BundleError):
    """A named public model that is neither cached nor downloadable now (offline, gated, moved)."""
