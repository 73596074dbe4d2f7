"""Running the receiver: on the built-in server or on waitress, its limits fitted to the
process's open files, until Ctrl-C or SIGTERM, with one line saying where it listens."""

from __future__ import annotations

import dataclasses
import logging
import signal
from wsgiref.simple_server import WSGIServer

from pixverse_tracker import logs
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.settings import SettingsError
from pixverse_tracker.web import connection_limits
from pixverse_tracker.web.builtin_server import make_dev_server
from pixverse_tracker.web.receiver import HEALTH_PATH, MASKED_PATH, log, make_app
from pixverse_tracker.web.receiver_config import SECRET_VARIABLE, ReceiverConfig


def push_url(server: WSGIServer) -> str:
    """The URL to pass as ``replyUrl``, with the secret shown as ``****``."""
    return _base_url(str(server.server_address[0]), int(server.server_address[1])) + MASKED_PATH


def _base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def serve(
    host: str, port: int, rt: Runtime, config: ReceiverConfig, server: str = "builtin"
) -> None:
    """Run a receiver server in the foreground until Ctrl-C or SIGTERM, one log line a request.

    ``server`` is ``builtin`` (the standard library, no extra package) or ``waitress`` (the
    ``server`` extra; what docker-compose runs). Both apply ``config.limits``, the cap first
    fitted to the process's open-file limit.
    """
    settings = rt.settings
    logs.configure(
        settings.log_level,
        secrets=[config.secret.reveal(), settings.useapi_token.reveal()],
        log_format=settings.log_format,
    )
    limits, lowered = connection_limits.fit_open_files(config.limits)
    if lowered is not None:
        logs.event(log, logging.WARNING, "push_limits", detail=lowered)
    config = dataclasses.replace(config, limits=limits)
    if server == "waitress":
        try:
            from pixverse_tracker.web import waitress_server  # the optional `server` extra
        except ModuleNotFoundError as exc:
            raise SettingsError(
                f"--server waitress needs the {exc.name} package: "
                "pip install 'pixverse-tracker[server]'"
            ) from None

        app = make_app(rt, config)
        hardened = waitress_server.make_server(host, port, app, limits, config.max_body_bytes)
        address = hardened.address()
        run, close = hardened.run, hardened.close
    else:
        builtin = make_dev_server(host, port, rt, config)
        address = (str(builtin.server_address[0]), int(builtin.server_address[1]))
        run, close = builtin.serve_forever, builtin.server_close
    # SIGTERM (docker stop) ends it like Ctrl-C, exit status 0; as PID 1 in a container a
    # process without a handler would not even notice it.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        base = _base_url(*address)
        print(
            f"receiving pushes: POST {base}{MASKED_PATH} (**** is {SECRET_VARIABLE}); "
            f"liveness: GET {base}{HEALTH_PATH}; {server} server, "
            f"{connection_limits.describe(limits)}",
            flush=True,
        )
        run()
    except KeyboardInterrupt:
        pass  # Ctrl-C is how the command is meant to end
    finally:
        signal.signal(signal.SIGTERM, previous)
        close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
