"""`nextscale demo`: a local web page for class-conditional sampling and zero-shot editing, served from this machine.

    pip install -e ".[demo]"
    nextscale demo --model runs/var/model          # or --vae vae.pth --var var_d16.pth; then open the printed URL

Why a small Starlette app with one static page, and not Gradio: the page must work offline with no external resource
(no CDN, no remote fonts) and be driven by a real browser in CI within seconds. One hand-written HTML/JS/CSS page has
no dependency at all in the browser, its every element has a stable id for the test, and the streaming of the
coarse-to-fine previews is a plain chunked response. Gradio would bring a large front-end bundle, its own event queue
and a websocket protocol to wait on, for two forms and a canvas. The Python side needs only `starlette` (routing,
streaming responses) and `uvicorn` (the HTTP server), both small and well kept.

The parts, each in its own file:
    requests.py   the JSON bodies of the API, checked into typed requests (bad input → `DemoRequestError`, a 4xx)
    engine.py     the model side: runs a request through the sampler or the editor, emitting events with previews
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

from nextscale.demo.server import DemoServer, run_demo, start_demo

__all__ = ["DemoServer", "run_demo", "start_demo"]
