"""CLI hook: ``faceveil serve`` (the local web page; Gradio is imported only when it runs)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``serve`` subcommand."""
    from faceveil.imageio import DEFAULT_MAX_PIXELS

    p = subparsers.add_parser(
        "serve",
        help="start the local web page: anonymize and recover photos in the browser",
        description=(
            "Serve a web page for anonymizing photos and recovering them with the key, on the embedded "
            "default model, offline. Photos and keys stay in memory; each request's temporary files are "
            "removed when it ends. Needs the web extra: pip install 'faceveil[web]'."
        ),
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; anything but localhost exposes the page to your network")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--model", default=None, metavar="M",
                   help="model for anonymizing (default: the best model embedded in this installation)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse images larger than this many pixels")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from importlib.util import find_spec

    from faceveil.errors import UsageError

    if find_spec("gradio") is None:  # not imported here: serve sets Gradio's folders before importing it
        raise UsageError("faceveil serve needs the web extra (gradio is missing): pip install 'faceveil[web]'")
    from faceveil.web.app import serve

    try:
        serve(host=args.host, port=args.port, model=args.model, max_pixels=args.max_pixels)
    except KeyboardInterrupt:
        pass
    return 0
