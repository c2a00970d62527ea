"""The listening socket of ``bazaar web`` and ``bazaar dev``, opened before anything starts.

Binding first means a taken port is reported at once, before migrations, workers or demo
data, instead of after a banner that claims the server is running.
"""

from __future__ import annotations

import errno
import socket


class PortInUse(RuntimeError):
    """Another process already listens on the address."""


BACKLOG = 1024


def listen(host: str, port: int, reuse_port: bool = False, backlog: int = BACKLOG,
           listening: bool = True) -> socket.socket:
    """A TCP socket bound to ``host:port``; with ``reuse_port`` several processes share it.

    With ``listening``, connections that arrive before the app serves wait in the
    backlog. Without it the socket is only bound, and listens when the app starts to
    serve (asyncio's ``create_server`` calls ``listen``): among processes sharing a
    port, the kernel then hands new connections only to those that serve, not to one
    still starting.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listening:
            sock.listen(backlog)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise PortInUse(f"port {port} on {host} is already in use") from None
        raise
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://host:port`` of a listening socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
