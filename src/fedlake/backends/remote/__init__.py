"""Real deployment: a server that clients reach over HTTPS, and the clients' side.

``wire.py`` frames tasks and replies as bytes, ``auth.py`` signs and checks requests,
``certs.py`` makes credentials for testing, ``coordinator.py`` and ``executor.py`` are the
server's round (the Federation's ``Executor``), ``app.py`` the HTTP server (FastAPI, an
extra), ``client.py`` the data owner's loop (httpx, an extra).
"""
