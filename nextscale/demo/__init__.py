"""`nextscale demo`: a local web page for class-conditional sampling and zero-shot editing, served from this machine.

    pip install -e ".[demo]"
    nextscale demo --model fmnist                  # the shipped model; then open the printed URL
    nextscale demo --model runs/var/model          # a trained model directory
    nextscale demo --vae vae.pth --var var_d16.pth # the released ImageNet checkpoints
    nextscale demo --model small --refiner large   # collaborative decoding: `large` draws from the handover scale on

Why a small Starlette app with one static page, and not Gradio: the page must work offline with no external resource
(no CDN, no remote fonts) and be driven by a real browser in CI within seconds. One hand-written HTML/JS/CSS page has
no dependency at all in the browser, its every element has a stable id for the test, and the streaming of the
coarse-to-fine previews is a plain chunked response. Gradio would bring a large front-end bundle, its own event queue
and a websocket protocol to wait on, for two forms and a canvas. The Python side needs only `starlette` (routing,
streaming responses) and `uvicorn` (the HTTP server), both small and well kept.

The parts, each in its own file:
    model.py      the one door into the library: loading (`ModelSource`), the model's facts, sampling and editing
                  with a preview after each scale (`DemoModel`); a change of the library's API touches only this
    requests.py   the JSON bodies of the API, checked into typed requests (bad input → `DemoRequestError`, a 4xx)
    engine.py     runs a checked request through `DemoModel`, emitting events: previews, images, settings, command
    examples.py   test images to edit, taken from the data the model was trained on (when the data is on this machine)
    pngs.py       images ↔ PNG data URLs
    app.py        the Starlette app: routes, streaming, error responses
    server.py     `run_demo` and a server that runs in a background thread (tests, screenshots)
    static/       the page: index.html, demo.js, demo.css

Nothing in the core library imports this package, so `import nextscale` works without the `demo` extra.
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as err:
    raise ImportError(f"the demo needs starlette and uvicorn ({err}): pip install 'nextscale[demo]'") from None

from nextscale.demo.model import ModelSource
from nextscale.demo.server import DemoServer, run_demo, start_demo

__all__ = ["DemoServer", "ModelSource", "run_demo", "start_demo"]
