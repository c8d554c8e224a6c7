"""``crispedit serve``: a local browser editor for 4K-8K photos (FastAPI + OpenSeadragon).

:func:`crispedit.server.app.create_app` builds the ASGI app; :mod:`crispedit.server.cli` runs it on uvicorn.
"""
