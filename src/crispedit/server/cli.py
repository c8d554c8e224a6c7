"""``crispedit serve``: start the browser editor (FastAPI app on uvicorn)."""

from __future__ import annotations

import os
import threading
import time
import webbrowser
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer

from crispedit.errors import CrispEditError, InputError


def serve_cmd(
    photos: Optional[list[Path]] = typer.Argument(None, help="Photos to open at start (under --root)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Folder whose photos the editor may open "
                                        "(default: the first PHOTO's folder, else the current folder)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address; anything but loopback needs --token."),
    port: int = typer.Option(8765, "--port", help="TCP port (0 = any free port)."),
    open_browser: bool = typer.Option(False, "--open", help="Open the editor in the default browser."),
    token: Optional[str] = typer.Option(None, "--token", help="Require this token on every request "
                                        "('auto' makes one and prints it)."),
    allow_host: Optional[list[str]] = typer.Option(None, "--allow-host", help="Extra Host name to accept "
                                                   "(e.g. behind a proxy); repeatable."),
    max_pixels: int = typer.Option(300_000_000, "--max-pixels", help="Refuse larger images (as edit)."),
    max_upload_mb: int = typer.Option(512, "--max-upload-mb", help="Refuse larger uploads (MiB)."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Where the per-run work folder goes "
                                            "(deleted at exit; default: the system temp folder)."),
    model: Optional[str] = typer.Option(None, "--model", help="Default SD model for sd15 runs "
                                        "(HF id, diffusers folder or .safetensors)."),
) -> None:
    """Start the browser editor: open, mask, run, compare at 1:1 and keep — all in the browser."""
    try:
        _serve(photos, root, host, port, open_browser, token, allow_host, max_pixels, max_upload_mb, work_dir,
               model)
    except CrispEditError as exc:
        from crispedit.cli import _fail

        _fail(exc)


def _serve(photos, root, host, port, open_browser, token, allow_host, max_pixels, max_upload_mb, work_dir,
           model) -> None:
    import uvicorn

    from crispedit.server.app import ServerConfig, create_app
    from crispedit.server.security import is_loopback, new_token

    photos = list(photos or [])
    for p in photos:
        if not p.is_file():
            raise InputError(f"photo not found: {p}", "check the path")
    if root is None:
        root = photos[0].resolve().parent if photos else Path(os.getcwd())
    if token == "auto" or (token is None and not is_loopback(host)):
        if token is None:
            typer.echo(f"note: --host {host} is not loopback, so a token is required; generated one", err=True)
        token = new_token()
    if max_upload_mb <= 0:
        raise InputError(f"--max-upload-mb {max_upload_mb} must be positive", "use e.g. --max-upload-mb 512")
    cfg = ServerConfig(root=root, host=host, port=port, token=token, max_pixels=max_pixels,
                       max_upload_bytes=max_upload_mb * 1024 * 1024, work_dir=work_dir,
                       allow_hosts=tuple(allow_host or ()), photos=tuple(photos), model=model)
    if port:
        _check_port(host, port)
    app = create_app(cfg)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)

    def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            threading.Event().wait(0.05)
        bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        shown = f"[{shown}]" if ":" in shown else shown
        url = f"http://{shown}:{bound}/" + (f"?token={token}" if token else "")
        typer.echo(f"crispedit editor at {url}  (root: {Path(root).resolve()}; Ctrl+C stops)", err=True)
        if host in ("0.0.0.0", "::"):
            import ipaddress

            from crispedit.server.security import local_addresses

            for a in sorted(local_addresses()):
                try:
                    ip = ipaddress.ip_address(a)
                except ValueError:
                    continue
                if ip.version == 4 and not ip.is_loopback and not ip.is_link_local:
                    typer.echo(f"  on the network: http://{a}:{bound}/?token={token}", err=True)
        if open_browser:
            webbrowser.open(url)

    threading.Thread(target=announce, daemon=True).start()
    server.run()


def _check_port(host: str, port: int) -> None:
    """Refuse, with the CLI's one-line message, a port we cannot bind (in use, privileged, out of range)."""
    import socket

    if not 0 < port < 65536:
        raise InputError(f"--port {port} is out of range", "use 1-65535, or 0 for any free port")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                             "pass another --port (or --port 0 for any free one)") from None


@contextmanager
def serve_in_thread(cfg) -> Iterator[str]:
    """Run ``create_app(cfg)`` on uvicorn in a daemon thread (``cfg.port = 0``: any free port) and yield its
    base URL; the server stops (and deletes its work folder) when the block ends. Used by the browser tests and
    ``bench/serve.py``."""
    import uvicorn

    from crispedit.server.app import create_app

    app = create_app(cfg)
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", lifespan="on"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not t.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    host = cfg.host if cfg.host not in ("0.0.0.0", "::") else "127.0.0.1"
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        t.join(timeout=10)
