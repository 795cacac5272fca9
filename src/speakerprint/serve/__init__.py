"""The HTTP service (``speakerprint serve``): FastAPI and uvicorn, behind the ``serve`` extra.

Importing this package needs neither; :func:`create_app` imports them and names
``pip install 'speakerprint[serve]'`` when they are missing.
"""

from __future__ import annotations

from speakerprint.serve.app import INSTALL_HINT, ServeLimits, create_app

__all__ = ["INSTALL_HINT", "ServeLimits", "create_app"]
