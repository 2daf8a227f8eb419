"""A local FTP server (pyftpdlib, in a thread): where the demo's switch drops its CDR files and
the mediation collects them, as a switch and a mediation box talk in a network; the tests use
it too."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from types import TracebackType

with warnings.catch_warnings():
    # pyftpdlib on Python 3.11 imports the standard library's asyncore/asynchat, which warn
    # that they are deprecated (it ships its own copies for 3.12 and later).
    warnings.filterwarnings("ignore", "The asyn(core|chat) module", DeprecationWarning)
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer


class LocalFtpServer:
    """``with LocalFtpServer(root) as ftp:`` serves ``root`` on a free loopback port to one
    user with every permission; ``ftp.url(path)`` is the ``ftp://`` URL of a directory."""

    def __init__(
        self, root: Path, *, user: str = "switch", password: str = "secret", host: str = "127.0.0.1"
    ) -> None:
        self.root, self.user, self.password, self.host = root, user, password, host
        auth = DummyAuthorizer()
        root.mkdir(parents=True, exist_ok=True)
        auth.add_user(user, password, str(root), perm="elradfmwMT")
        # No delay after a failed login (3 s by default): a wrong password answers at once.
        handler = type("Handler", (FTPHandler,),
                       {"authorizer": auth, "banner": "ocs", "auth_failed_timeout": 0})  # fmt: skip
        self._server = FTPServer((host, 0), handler)
        self.port: int = self._server.socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ftpd", daemon=True)

    def url(self, path: str = "/") -> str:
        return f"ftp://{self.user}:{self.password}@{self.host}:{self.port}/{path.lstrip('/')}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)

    def __enter__(self) -> LocalFtpServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(10)
        self._server.close_all()
