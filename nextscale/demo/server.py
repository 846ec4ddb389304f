"""Serving the demo: `run_demo` (the `nextscale demo` command, until Ctrl+C) and `start_demo` (a server in a
background thread, for tests and the screenshot script). Both bind 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import webbrowser
from dataclasses import dataclass

import uvicorn

from nextscale.demo.app import build_app
from nextscale.demo.engine import DemoEngine
from nextscale.demo.examples import examples_from_metadata
from nextscale.demo.model import DemoModel, ModelSource
from nextscale.demo.requests import DemoLimits
from nextscale.errors import UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def build_engine(source: ModelSource, limits: DemoLimits | None = None, model: DemoModel | None = None) -> DemoEngine:
    """The engine for the model named by `source` (loaded now unless `model` is that model already loaded), with
    example images from the data it was trained on."""
    model = model if model is not None else source.load()
    examples = examples_from_metadata(source.metadata(), model.image_size)
    return DemoEngine(model, source, limits or DemoLimits(), examples)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port). Raises ValueError with one line on failure."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: a port is in [0, 65535] (0 picks a free one)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise UsageError(f"--host {host}: not an address of this machine ({err.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        hint = " (choose another with --port, or 0 for any free one)" if err.errno == 98 else ""
        raise UsageError(f"cannot listen on {host}:{port}: {err.strerror}{hint}") from None
    sock.listen(64)
    return sock


def _server(engine: DemoEngine, host: str) -> uvicorn.Server:
    allowed = None if is_loopback(host) else ["*"]
    config = uvicorn.Config(build_app(engine, allowed), log_level="warning", access_log=False, lifespan="off")
    return uvicorn.Server(config)


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


@dataclass
class DemoServer:
    """A demo served from a background thread; `stop()` ends it."""

    engine: DemoEngine
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def start_demo(
    engine: DemoEngine | ModelSource, host: str = DEFAULT_HOST, port: int = 0, timeout: float = 30.0
) -> DemoServer:
    """Serve `engine` (or the model of a `ModelSource`) from a background thread; returns once it answers."""
    if isinstance(engine, ModelSource):
        engine = build_engine(engine)
    sock = bind_socket(host, port)
    server = _server(engine, host)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="nextscale-demo", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the demo server did not start")
        time.sleep(0.01)
    return DemoServer(engine, _url(sock), server, thread)


def run_demo(
    model: str | None = None,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    device: str = "cpu",
    open_browser: bool = False,
    *,
    vae: str | None = None,
    var: str | None = None,
    num_heads: int | None = None,
    bf16: bool = False,
    fast: bool = False,
    max_images: int = DemoLimits.max_images,
    refiner: str | None = None,
    quantize: str | None = None,
) -> None:
    """Serve the demo of `model` (a model directory) or of official checkpoints (`vae` + `var`) at
    http://host:port/ until interrupted; with `refiner` (a model directory on the same tokenizer) samples can hand
    over to it. Loads the models first, so a bad path fails before anything listens."""
    source = ModelSource(model=model, vae=vae, var=var, num_heads=num_heads, device=device, bf16=bf16, fast=fast,
                         refiner=refiner, quantize=quantize)  # fmt: skip
    started = time.perf_counter()
    engine = build_engine(source, DemoLimits(max_images=max_images))
    serve(engine, host, port, open_browser, time.perf_counter() - started)


def serve(
    engine: DemoEngine,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    open_browser: bool = False,
    loaded_seconds: float | None = None,
) -> None:
    """Serve `engine` at http://host:port/ in this thread until interrupted (Ctrl+C)."""
    sock = bind_socket(host, port)
    url = _url(sock)
    loaded = f" loaded in {loaded_seconds:.1f} s" if loaded_seconds is not None else ""
    examples = f", {len(engine.examples)} example images" if engine.examples else ""
    refiner = f" + refiner {engine.source.refiner_label}" if engine.source.refiner is not None else ""
    print(f"nextscale demo: {engine.source.label}{refiner}{loaded} ({engine.source.device}{examples})", flush=True)
    if not is_loopback(host):
        print(f"nextscale demo: note: listening on {host}, reachable from other machines (no authentication)")
    print(f"nextscale demo: open {url} (Ctrl+C to stop)", flush=True)
    server = _server(engine, host)
    if open_browser:
        threading.Thread(target=_open_when_started, args=(server, url), daemon=True).start()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down on Ctrl+C, then raises it again
        pass
    finally:
        sock.close()
    print("nextscale demo: stopped", flush=True)


def _open_when_started(server: uvicorn.Server, url: str) -> None:
    while not server.started and not server.should_exit:
        time.sleep(0.05)
    if server.started:
        webbrowser.open(url)
