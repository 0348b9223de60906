"""``diffjscc keys``: CURVE key pairs for the worker, and how sockets use them.

ZMQ's CURVE (CurveZMQ) encrypts a connection and authenticates both ends. The
server (broker frontend, or a standalone worker) holds a secret key; each
client holds its own key pair and the server's public key; the server accepts
only clients whose public key file lies in its authorised-clients folder.
Key files are pyzmq's certificate format (``zmq.auth``): ``NAME.key`` holds
the public key, ``NAME.key_secret`` both halves (kept 0600).

    diffjscc keys --dir keys server client1 worker1
    # server side: --curve-secret keys/server.key_secret --curve-clients DIR_OF_CLIENT_.key_FILES
    # client side: --curve-secret keys/client1.key_secret --curve-server keys/server.key
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from diffjscc.worker.protocol import WorkerError


def _load(path: str | os.PathLike, need_secret: bool) -> tuple[bytes, bytes | None]:
    path = Path(path)
    if not path.is_file():
        raise WorkerError(f"CURVE key file {path} does not exist (make keys with 'diffjscc keys')")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as exc:
        raise WorkerError(
            f"CURVE key file {path} is not a key made by 'diffjscc keys': {exc}"
        ) from None
    if need_secret and not secret:
        raise WorkerError(f"{path} holds no secret key; give the NAME.key_secret file")
    return public, secret


def given_together(**options: str | None) -> bool:
    """True when every key option is given, False when none is; WorkerError when only some are."""
    given = [name for name, value in options.items() if value]
    if given and len(given) < len(options):
        names = " and ".join(f"--{name.replace('_', '-')}" for name in options)
        raise WorkerError(f"CURVE needs both {names}")
    return bool(given)


@dataclass(frozen=True)
class CurveServer:
    """A server's key pair and the folder of client public keys it accepts."""

    public: bytes
    secret: bytes
    clients_dir: str

    @classmethod
    def from_files(cls, secret_file, clients_dir) -> CurveServer:
        public, secret = _load(secret_file, need_secret=True)
        clients = Path(clients_dir)
        if not clients.is_dir() or not any(clients.glob("*.key")):
            raise WorkerError(f"authorised-clients folder {clients} holds no NAME.key public keys")
        return cls(public, secret, str(clients))

    def start_authenticator(self, context: zmq.Context):
        """Authenticator thread for ``context``; stop() it when the sockets are closed."""
        from zmq.auth.thread import ThreadAuthenticator

        auth = ThreadAuthenticator(context)
        auth.start()
        auth.configure_curve(domain="*", location=self.clients_dir)
        return auth

    def apply(self, socket: zmq.Socket) -> None:
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True


@dataclass(frozen=True)
class CurveClient:
    """A client's key pair and the public key of the server it trusts."""

    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def from_files(cls, secret_file, server_public_file) -> CurveClient:
        public, secret = _load(secret_file, need_secret=True)
        server_public, _ = _load(server_public_file, need_secret=False)
        return cls(public, secret, server_public)

    def apply(self, socket: zmq.Socket) -> None:
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_serverkey = self.server_public


def create_keys(
    directory: str | os.PathLike, name: str, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret into ``directory``; returns their paths."""
    if not name or os.sep in name or name.startswith("."):
        raise WorkerError(f"key name {name!r} must be a plain file name")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public_path, secret_path = directory / f"{name}.key", directory / f"{name}.key_secret"
    if not overwrite and (public_path.exists() or secret_path.exists()):
        raise WorkerError(f"{public_path} or {secret_path} exists; pass --overwrite to replace")
    # Written in a private temporary folder beside the target, then renamed: no
    # half-written key, and the secret is never readable by others.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=directory))
    try:
        made_public, made_secret = zmq.auth.create_certificates(tmp, name)
        os.chmod(made_secret, 0o600)
        os.replace(made_secret, secret_path)
        os.replace(made_public, public_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return public_path, secret_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="diffjscc keys",
        description="Generate ZMQ CURVE key pairs (NAME.key public, NAME.key_secret private).",
    )
    parser.add_argument(
        "names", nargs="+", help="one key pair per name, e.g. server client1 worker1"
    )
    parser.add_argument("--dir", default="keys", help="folder to write into (default: ./keys)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing key files")
    args = parser.parse_args(argv)
    if not zmq.has("curve"):
        raise WorkerError("this libzmq was built without CURVE support")
    for name in args.names:
        public, secret = create_keys(args.dir, name, overwrite=args.overwrite)
        print(f"{name}: public {public}, secret {secret}")
    return 0
