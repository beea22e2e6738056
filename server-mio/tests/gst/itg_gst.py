#!/usr/bin/python3
"""GStreamer's webrtcbin as a WHIP publisher or a WHEP viewer of the real server.

A peer that no one on this project wrote: GStreamer's own WebRTC stack (libnice for ICE, its
OpenSSL-based DTLS with an RSA-2048 certificate of its own, its RTP jitter buffer and
depayloaders), driven from Python through GObject introspection. Signalling is plain WHIP/WHEP
over HTTP (RFC 9725): one POST of a complete offer (the server is ICE-lite and takes no
trickle), the answer applied, DELETE on the Location at the end.

    itg_gst.py publish --url http://127.0.0.1:8080/whip/77 --key 77-secret --seconds 8
    itg_gst.py watch --url http://127.0.0.1:8080/whep/77 --seconds 8
    itg_gst.py watch --url ... --twcc --choose 15=0 --choose 20=auto --http-source 127.0.0.2

A viewer can offer transport-wide congestion feedback (`--twcc`: webrtcbin's RTP session then
sends it, and a server with a bandwidth estimate uses it), pick a simulcast layer at given
seconds after its first frame through the WHEP layer extension (`--choose`), and send its HTTP
from another local address (`--http-source`, a network the server has not seen). It reports
every change of the decoded picture's size with when it happened.

Prints one JSON line with what happened (`ice`, `dtls`, frames and their size, audio buffers,
bytes sent) and exits 0 when the session connected and media flowed, 1 otherwise.
Needs Debian's gstreamer1.0-plugins-{base,good,bad,ugly}, gstreamer1.0-nice, gstreamer1.0-libav,
python3-gi and gir1.2-gst-plugins-bad-1.0.
"""

import functools
import http.client
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import client_args  # noqa: E402

Gst.init(None)

TWCC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


class SourceHandler(urllib.request.HTTPHandler):
    """Plain HTTP from a chosen local address."""

    def __init__(self, source):
        super().__init__()
        self.source = source

    def http_open(self, req):
        return self.do_open(
            functools.partial(http.client.HTTPConnection, source_address=(self.source, 0)), req
        )

# The encoder, payloader and caps of each codec it can publish, and the depayloader and decoder
# it watches with.
CODECS = {
    "h264": (
        "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate={kbps} ! "
        "video/x-h264,profile=constrained-baseline ! "
        "rtph264pay config-interval=-1 aggregate-mode=zero-latency ! "
        "application/x-rtp,media=video,encoding-name=H264,payload=96",
        "application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload=96,"
        "packetization-mode=(string)1,profile-level-id=(string)42e01f",
        "rtph264depay ! h264parse ! avdec_h264",
    ),
    "h265": (
        "x265enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate={kbps} "
        "option-string=repeat-headers=1 ! "
        "video/x-h265,profile=main ! rtph265pay config-interval=-1 ! "
        "application/x-rtp,media=video,encoding-name=H265,payload=96",
        "application/x-rtp,media=video,encoding-name=H265,clock-rate=90000,payload=96",
        "rtph265depay ! h265parse ! avdec_h265",
    ),
}

PUBLISH = (
    "webrtcbin name=rtc bundle-policy=max-bundle "
    "videotestsrc is-live=true pattern=ball ! "
    "video/x-raw,width={width},height={height},framerate=30/1 ! "
    "{encode} ! rtc. "
    "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! opusenc ! "
    "rtpopuspay ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111 ! rtc. "
)


class Session:
    def __init__(self, args):
        self.args = args
        self.loop = GLib.MainLoop()
        self.result = {
            "mode": args.mode,
            "ice": "new",
            "connection": "new",
            "status": None,
            "frames": 0,
            "width": 0,
            "height": 0,
            "audio_buffers": 0,
            "error": None,
            "gstreamer": Gst.version_string(),
        }
        self.location = None
        self.layer_url = None
        self.opener = (
            urllib.request.build_opener(SourceHandler(args.http_source))
            if args.http_source
            else urllib.request.build_opener()
        )
        self.started = time.monotonic()
        self.last_frame = None
        self.offer_at = None
        self.first_frame_ms = None
        self.first_frame_at = None
        if args.mode == "publish":
            encode = CODECS[args.codec][0].format(kbps=args.kbps)
            desc = PUBLISH.format(width=args.width, height=args.height, encode=encode)
            self.pipe = Gst.parse_launch(desc)
            self.rtc = self.pipe.get_by_name("rtc")
        else:
            self.pipe = Gst.Pipeline.new("watch")
            self.rtc = Gst.ElementFactory.make("webrtcbin", "rtc")
            self.rtc.set_property("bundle-policy", "max-bundle")
            self.pipe.add(self.rtc)
        # libnice gathers on every interface but loopback; a server on loopback (the tests'
        # private namespace has nothing else) is reached from an address named here.
        # (The agent is kept referenced here: PyGObject releases the property's value once more
        # than it took it, which would free webrtcbin's agent under it.)
        self.ice = self.rtc.get_property("ice-agent")
        for ip in args.local_ip or []:
            self.ice.emit("add-local-ip-address", ip)
        if args.mode == "watch":
            # Transport-wide sequence numbers on both (one counter per transport, as browsers).
            twcc = f',extmap-3=(string)"{TWCC}"' if args.twcc else ""
            for kind in ("video", "audio"):
                caps = Gst.Caps.from_string(
                    (
                        CODECS[args.codec][1]
                        if kind == "video"
                        else "application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,"
                        "payload=111,encoding-params=(string)2"
                    )
                    + twcc
                )
                self.rtc.emit(
                    "add-transceiver",
                    GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY,
                    caps,
                )
            self.rtc.connect("pad-added", self.on_pad)
        self.rtc.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.rtc.connect("notify::ice-gathering-state", self.on_gathering)
        self.rtc.connect("notify::ice-connection-state", self.on_ice)
        self.rtc.connect("notify::connection-state", self.on_connection)
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_error)
        self.offer_sent = False

    # -- signalling -------------------------------------------------------------------------

    def on_negotiation_needed(self, _rtc):
        promise = Gst.Promise.new_with_change_func(self.on_offer_created, None)
        self.rtc.emit("create-offer", None, promise)

    def on_offer_created(self, promise, _data):
        promise.wait()
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None else None
        if offer is None:
            err = reply.get_value("error") if reply is not None else None
            self.result["error"] = f"webrtcbin made no offer: {err.message if err else reply}"
            GLib.idle_add(self.loop.quit)
            return
        self.rtc.emit("set-local-description", offer, Gst.Promise.new())

    def on_gathering(self, rtc, _pspec):
        # The server takes one complete offer: send it once gathering is done.
        if rtc.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(self.send_offer)

    def send_offer(self):
        if self.offer_sent:
            return False
        self.offer_sent = True
        self.offer_at = time.monotonic()
        sdp = self.rtc.get_property("local-description").sdp.as_text()
        headers = {"Content-Type": "application/sdp"}
        if self.args.key:
            headers["Authorization"] = f"Bearer {self.args.key}"
        req = urllib.request.Request(self.args.url, data=sdp.encode(), headers=headers, method="POST")
        try:
            with self.opener.open(req, timeout=10) as resp:
                self.result["status"] = resp.status
                answer = resp.read().decode()
                loc = resp.headers.get("Location")
                self.location = urllib.parse.urljoin(self.args.url, loc) if loc else None
                for link in resp.headers.get_all("Link") or []:
                    for part in link.split(","):
                        if 'rel="urn:ietf:params:whep:ext:core:layer"' in part:
                            url = part.split(";")[0].strip().strip("<>")
                            self.layer_url = urllib.parse.urljoin(self.args.url, url)
        except urllib.error.HTTPError as e:
            self.result["status"] = e.code
            self.result["error"] = e.read().decode(errors="replace")
            self.loop.quit()
            return False
        except OSError as e:
            self.result["error"] = str(e)
            self.loop.quit()
            return False
        self.result["answer_bandwidth"] = [
            line for line in answer.splitlines() if line.startswith("b=")
        ]
        self.result["answer_twcc"] = TWCC in answer
        if self.args.verbose:
            print(answer, file=sys.stderr)
        _, msg = GstSdp.SDPMessage.new_from_text(answer)
        desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        self.rtc.emit("set-remote-description", desc, Gst.Promise.new())
        return False

    def delete(self):
        if not self.location:
            return
        req = urllib.request.Request(self.location, method="DELETE")
        if self.args.key:
            req.add_header("Authorization", f"Bearer {self.args.key}")
        try:
            self.opener.open(req, timeout=5).read()
        except (urllib.error.HTTPError, OSError):
            pass

    def choose(self, layer):
        """Asks for a simulcast layer (an encoding id, or "auto") through the WHEP layer
        extension; notes the status and the answer."""
        body = b"{}" if layer == "auto" else json.dumps({"encodingId": layer}).encode()
        entry = {"layer": layer, "at_ms": self.since_first_frame(), "status": None}
        if not self.layer_url:
            entry["error"] = "the answer had no layer link"
        else:
            req = urllib.request.Request(
                self.layer_url,
                data=body,
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            try:
                with self.opener.open(req, timeout=5) as resp:
                    entry["status"] = resp.status
                    entry["answer"] = json.loads(resp.read().decode() or "null")
            except urllib.error.HTTPError as e:
                entry["status"] = e.code
                entry["error"] = e.read().decode(errors="replace")
            except (OSError, ValueError) as e:
                entry["error"] = str(e)
        self.result.setdefault("choices", []).append(entry)
        return False

    def since_first_frame(self):
        if self.first_frame_at is None:
            return None
        return round((time.monotonic() - self.first_frame_at) * 1000)

    # -- state ------------------------------------------------------------------------------

    def on_ice(self, rtc, _pspec):
        state = rtc.get_property("ice-connection-state")
        self.result["ice"] = state.value_nick
        if state == GstWebRTC.WebRTCICEConnectionState.FAILED:
            self.result["error"] = "ICE failed"
            self.loop.quit()

    def on_connection(self, rtc, _pspec):
        state = rtc.get_property("connection-state")
        self.result["connection"] = state.value_nick
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED and self.offer_at:
            self.result["connected_ms"] = round((time.monotonic() - self.offer_at) * 1000)
        if state == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            self.result["error"] = "the peer connection failed (DTLS)"
            self.loop.quit()

    def on_error(self, _bus, msg):
        err, dbg = msg.parse_error()
        self.result["error"] = f"{err.message} ({dbg})"
        self.loop.quit()

    # -- media (watch) ----------------------------------------------------------------------

    def on_pad(self, _rtc, pad):
        if pad.direction != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps() or pad.query_caps(None)
        media = caps.get_structure(0).get_string("media")
        if self.args.verbose:
            print(f"pad {pad.get_name()}: {caps.to_string()}", file=sys.stderr)
        if media == "video":
            desc = (
                CODECS[self.args.codec][2]
                + " ! videoconvert ! fakesink name=vsink signal-handoffs=true sync=false"
            )
        else:
            desc = "rtpopusdepay ! opusdec ! fakesink name=asink signal-handoffs=true sync=false"
        bin_ = Gst.parse_bin_from_description(desc, True)
        self.pipe.add(bin_)
        bin_.sync_state_with_parent()
        pad.link(bin_.get_static_pad("sink"))
        sink = bin_.get_by_name("vsink" if media == "video" else "asink")
        sink.connect("handoff", self.on_video if media == "video" else self.on_audio)

    def on_video(self, _sink, buf, pad):
        now = time.monotonic()
        if self.first_frame_ms is None and self.offer_at:
            # From the offer's POST: what a viewer waits once it asked.
            self.first_frame_ms = round((now - self.offer_at) * 1000)
            self.result["first_frame_ms"] = self.first_frame_ms
            self.first_frame_at = now
            for spec in self.args.choose or []:
                at, layer = spec.split("=", 1)
                GLib.timeout_add(int(float(at) * 1000), self.choose, layer)
        if self.last_frame is not None:
            gap = round((now - self.last_frame) * 1000)
            self.result["max_gap_ms"] = max(self.result.get("max_gap_ms", 0), gap)
        self.last_frame = now
        self.result["last_frame_ms"] = self.since_first_frame()
        self.result["frames"] += 1
        s = pad.get_current_caps().get_structure(0)
        size = (s.get_int("width")[1], s.get_int("height")[1])
        if size != (self.result["width"], self.result["height"]):
            # Every size the picture had, from when (ms after the first frame).
            self.result.setdefault("sizes", []).append([self.since_first_frame(), *size])
        self.result["width"], self.result["height"] = size

    def on_audio(self, _sink, _buf, _pad):
        self.result["audio_buffers"] += 1

    # -- run --------------------------------------------------------------------------------

    def rtp_bytes(self, kind, field):
        """RTP bytes webrtcbin counted over every stream of `kind` (outbound-rtp, inbound-rtp)."""
        promise = Gst.Promise.new()
        self.rtc.emit("get-stats", None, promise)
        promise.wait()
        reply = promise.get_reply()
        total = 0

        def visit(_field, value, _data):
            nonlocal total
            if isinstance(value, Gst.Structure) and value.get_name() == kind:
                ok, n = value.get_uint64(field)
                if ok:
                    total += n
            return True

        if reply is not None:
            reply.foreach(visit, None)
        return total

    def run(self):
        self.pipe.set_state(Gst.State.PLAYING)
        GLib.timeout_add(int(self.args.seconds * 1000), self.loop.quit)
        self.loop.run()
        secs = max(time.monotonic() - (self.offer_at or self.started), 0.001)
        if self.args.mode == "publish":
            self.result["bytes_sent"] = self.rtp_bytes("outbound-rtp", "bytes-sent")
            self.result["kbps"] = round(self.result["bytes_sent"] * 8 / secs / 1000)
        else:
            self.result["bytes_received"] = self.rtp_bytes("inbound-rtp", "bytes-received")
            self.result["kbps"] = round(self.result["bytes_received"] * 8 / secs / 1000)
        self.delete()
        self.pipe.set_state(Gst.State.NULL)
        connected = self.result["connection"] == "connected"
        return client_args.report(self.result, self.args.mode, connected)


def main():
    p = client_args.parser(__doc__.splitlines()[0])
    p.add_argument("--kbps", type=int, default=1500)
    p.add_argument("--codec", choices=sorted(CODECS), default="h264")
    p.add_argument("--verbose", action="store_true", help="print the answer and the pads")
    p.add_argument("--local-ip", action="append", help="an address to gather ICE candidates on")
    p.add_argument("--twcc", action="store_true", help="offer transport-wide congestion feedback")
    p.add_argument(
        "--choose",
        action="append",
        metavar="SECONDS=LAYER",
        help="ask for a simulcast layer (an encoding id, or auto) this long after the first frame",
    )
    p.add_argument("--http-source", help="the local address to send HTTP from")
    args = p.parse_args()
    return Session(args).run()


if __name__ == "__main__":
    sys.exit(main())
