"""Running ``dsl ui``: refuse a non-loopback address without a token, bind the port first (a port in use is a
clear error, not a traceback), then serve the app on uvicorn with the gateway's guarded protocol."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Any, Callable, Optional

from sdk.errors import DslError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a DslError that says the port is in use."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise DslError(f"cannot bind to {host}: {e.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise DslError(f"port {port} on {host} is in use (another dsl ui, or another program): "
                           f"choose another with --port") from None
        raise DslError(f"cannot bind to {host}:{port}: {e.strerror}") from None
    sock.listen(128)
    return sock


def serve(recipe: "str | Path", host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          workdir: "str | Path | None" = None, say: Optional[Callable[[str], None]] = None,
          token_env: Optional[str] = None) -> None:
    """Serve the pages of ``recipe`` until interrupted."""
    import uvicorn

    from sdk.serving.asgi import server_config
    from sdk.ui.app import TOKEN_ENV, create_app

    token_env = token_env or TOKEN_ENV
    if not loopback(host) and not os.environ.get(token_env):
        raise DslError(f"dsl ui binds to {host}, which other machines can reach, so it needs a token: "
                       f"export {token_env}=<a long random string> (or bind to 127.0.0.1)")
    # no token: only a loopback name may address the page (a site that rebinds its DNS name to 127.0.0.1 may not)
    hosts = None if os.environ.get(token_env) else tuple(dict.fromkeys((LOOPBACK_NAMES + (host.lower(),))))
    app = create_app(recipe, workdir, token_env, hosts)
    app.state.pages.ws()  # a recipe that does not load is said now, before the port is taken
    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    if say:
        note = f" (token from {token_env})" if os.environ.get(token_env) else ""
        say(f"dsl ui: http://{shown}:{sock.getsockname()[1]}/{note}  (Ctrl-C stops it)")
    config: Any = server_config(app, host, port)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
