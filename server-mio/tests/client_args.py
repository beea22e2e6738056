"""What the Python WebRTC clients of the interop tests (tests/gst, tests/aiortc) share: their
command line and their one JSON result line."""

import argparse
import json


def parser(description):
    """The arguments every client takes: publish or watch, where, with which key, how long,
    and the picture a publisher sends."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("mode", choices=["publish", "watch"])
    p.add_argument("--url", required=True)
    p.add_argument("--key")
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    return p


def report(result, mode, connected):
    """Prints the result line; the exit code: 0 when the session connected and media flowed
    (frames decoded when watching, bytes sent when publishing)."""
    ok = connected and (result["frames"] > 0 if mode == "watch" else result["bytes_sent"] > 0)
    print(json.dumps(result), flush=True)
    return 0 if ok else 1
