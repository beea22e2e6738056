#!/usr/bin/env python3
"""aiortc (Python's WebRTC stack) as a WHIP publisher or a WHEP viewer of the real server.

A peer that no one on this project wrote: aiortc's own ICE (aioice, with consent freshness),
DTLS (pyOpenSSL, an ECDSA certificate of its own), SRTP, jitter buffer, NACK and PLI, and its
PyAV encoders and decoders. Signalling is plain WHIP/WHEP over HTTP (RFC 9725): one POST of a
complete offer (aiortc gathers before it answers `setLocalDescription`), the answer applied,
DELETE on the Location at the end.

    itg_aiortc.py publish --url http://127.0.0.1:8080/whip/77 --key 77-secret --seconds 8
    itg_aiortc.py watch --url http://127.0.0.1:8080/whep/77 --seconds 8

aioice gathers no candidate on 127.0.0.1: in a loopback-only namespace give `lo` another
address (e.g. 127.0.0.2) first. Prints one JSON line with what happened and exits 0 when the
session connected and media flowed, 1 otherwise. Needs `pip install -r requirements.txt`.
"""

import asyncio
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import av
from aiortc import (
    AudioStreamTrack,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import client_args  # noqa: E402


class Bars(VideoStreamTrack):
    """A moving picture at the asked size and 30 fps, so the encoder has something to code."""

    def __init__(self, width, height):
        super().__init__()
        self.width, self.height = width, height
        self.n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        # A bright bar sweeping across a grey picture; chroma shifting with time.
        y, u, v = frame.planes
        x = (self.n * 8) % self.width
        row = bytearray(b"\x50" * y.line_size)
        row[x : x + 40] = b"\xeb" * len(row[x : x + 40])
        y.update(bytes(row) * self.height)
        u.update(bytes([(self.n * 3) % 256]) * (u.line_size * (self.height // 2)))
        v.update(b"\x80" * (v.line_size * (self.height // 2)))
        self.n += 1
        frame.pts, frame.time_base = pts, time_base
        return frame


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode(errors="replace")


async def run(args):
    result = {
        "mode": args.mode,
        "aiortc": __import__("aiortc").__version__,
        "status": None,
        "connection": "new",
        "frames": 0,
        "width": 0,
        "height": 0,
        "audio_frames": 0,
        "error": None,
    }
    pc = RTCPeerConnection()
    started = time.monotonic()
    done = asyncio.Event()

    @pc.on("connectionstatechange")
    def on_state():
        result["connection"] = pc.connectionState
        if pc.connectionState == "connected":
            result["connected_ms"] = round((time.monotonic() - started) * 1000)
        if pc.connectionState == "failed":
            result["error"] = "the peer connection failed"
            done.set()

    async def consume(track):
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    if result["frames"] == 0:
                        result["first_frame_ms"] = round((time.monotonic() - started) * 1000)
                    result["frames"] += 1
                    result["width"], result["height"] = frame.width, frame.height
                    result["last_frame_ms"] = round((time.monotonic() - started) * 1000)
                else:
                    result["audio_frames"] += 1
        except MediaStreamError:
            pass

    if args.mode == "watch":
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        pc.on("track", lambda track: asyncio.ensure_future(consume(track)))
    else:
        video = pc.addTransceiver(Bars(args.width, args.height), direction="sendonly")
        codecs = RTCRtpSender.getCapabilities("video").codecs
        video.setCodecPreferences(
            [c for c in codecs if c.mimeType.lower() == f"video/{args.codec}"]
        )
        pc.addTransceiver(AudioStreamTrack(), direction="sendonly")

    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp"}
    if args.key:
        headers["Authorization"] = f"Bearer {args.key}"
    status, resp_headers, answer = await asyncio.get_running_loop().run_in_executor(
        None, lambda: http("POST", args.url, pc.localDescription.sdp.encode(), headers)
    )
    result["status"] = status
    location = None
    if status == 201:
        loc = resp_headers.get("Location")
        location = urllib.parse.urljoin(args.url, loc) if loc else None
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        try:
            await asyncio.wait_for(done.wait(), timeout=args.seconds)
        except asyncio.TimeoutError:
            pass
    else:
        result["error"] = answer.strip()
    if args.mode == "publish":
        stats = await pc.getStats()
        result["bytes_sent"] = sum(
            s.bytesSent for s in stats.values() if s.type == "outbound-rtp"
        )
        result["kbps"] = round(result["bytes_sent"] * 8 / args.seconds / 1000)
    if location:
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: http("DELETE", location, headers=headers)
        )
    await pc.close()
    return client_args.report(result, args.mode, result.get("connected_ms") is not None)


def main():
    p = client_args.parser(__doc__.splitlines()[0])
    p.add_argument("--codec", choices=["h264", "vp8"], default="h264")
    args = p.parse_args()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
