"""`closedloop serve [FOLDER|CAMPAIGN.sqlite ...]`: the live dashboard in the browser.

    $ closedloop serve campaigns/
    serving 1 campaign(s) from campaigns at http://127.0.0.1:8765/ (Ctrl-C stops)
    control: open http://127.0.0.1:8765/?token=Qm9... to approve, edit, skip, pause, resume and abort

Binds to 127.0.0.1 unless --host says otherwise (with a warning: anyone who reaches that address sees
the campaigns). Viewing needs nothing; control needs the token printed at start, or the one set in the
environment variable CLOSEDLOOP_DASHBOARD_TOKEN (controller.serve.auth); --view-only turns control off.
The dashboard never writes a campaign file; a campaign runs the same with it open or not.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import sys
from pathlib import Path

import click

from closedloop.controller.cli.errors import handle_errors

DASHBOARD_NICENESS = 10


@click.command()
@click.argument("paths", metavar="[FOLDER|CAMPAIGN.sqlite]...", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port (0: any free port).")
@click.option("--view-only", is_flag=True, help="No control from the page (no token is made).")
@handle_errors
def serve(paths: tuple[Path, ...], host: str, port: int, view_only: bool) -> None:
    """Serve a live dashboard of the campaign files in FOLDER (default: here) and of each CAMPAIGN given."""
    import uvicorn

    from closedloop.controller.serve.app import make_app
    from closedloop.controller.serve.auth import TOKEN_VARIABLE, ControlAuth
    from closedloop.controller.serve.folder import ServedCampaigns

    roots = list(paths) or [Path(".")]
    try:
        auth = ControlAuth.from_environment(view_only=view_only)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    hosts: list[str] | None = ["127.0.0.1", "localhost", "::1", "[::1]"]
    if not _loopback(host):
        hosts = None  # reached by whatever name the lab's network gives it
        click.echo(f"WARNING: serving on {host}: anyone who can reach this address sees these campaigns"
                   + ("" if view_only else ", and the control token and cookie travel unencrypted (plain HTTP): "
                      "use it on a trusted network, or --view-only"), err=True)
    count = len(ServedCampaigns(roots).keys())
    # Bound here, so the address printed is the one listening (with --port 0, the port the system chose).
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
        listening.listen(128)  # a request arriving before the app is up waits in the backlog, not refused
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}; pick another with --port (0: any free port)") from None
    bound = listening.getsockname()[1]
    where = ", ".join(str(p) for p in roots)
    url = f"http://{host}:{bound}/"
    click.echo(f"serving {count} campaign(s) from {where} at {url} (Ctrl-C stops)")
    if auth.token is None:
        click.echo("control: off (--view-only)")
    elif auth.configured:
        click.echo(f"control: with the token in {TOKEN_VARIABLE} (open {url}?token=... or enter it on a page)")
    else:
        click.echo(f"control: open {url}?token={auth.token} to approve, edit, skip, pause, resume and abort")
    sys.stdout.flush()
    # A campaign and its instruments come first: on the campaign's machine the dashboard only gets the CPU
    # they leave (nice +10). Pages wait a little longer under load; a trial never waits for a page.
    with contextlib.suppress(OSError):
        os.nice(DASHBOARD_NICENESS)
    server = uvicorn.Server(uvicorn.Config(make_app(roots, auth=auth, hosts=hosts), log_level="warning"))
    server.run(sockets=[listening])


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
