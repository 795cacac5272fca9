"""The PostgreSQL enrollment store's former place; it lives in
:mod:`speakerprint.inference.store.postgres` (import it from :mod:`speakerprint.inference.store`)."""

from speakerprint.inference.store.postgres import INSTALL_HINT, PgEnrollmentStore, redact_url

__all__ = ["INSTALL_HINT", "PgEnrollmentStore", "redact_url"]
