// A WHIP publisher built the way OBS 30+'s WHIP output builds its own: libdatachannel (through
// node-datachannel, the same C++ library with its libjuice ICE), one send-only audio and one
// send-only video track, each with an SSRC, Opus on payload type 111 and H.264 on 96, an RTP
// packetizer (H.264 from Annex-B start codes, 1200-byte fragments) chained to a sender-report
// reporter and a NACK responder; the offer posted once gathering is done, with the stream key as
// a bearer token; frames sent with their timestamps set on the packetizer's RTP config.
//
// It streams an Annex-B H.264 file in real time (looped), and Opus silence every 20 ms.
import nodeDataChannel from 'node-datachannel';
import { readFileSync } from 'node:fs';

const { PeerConnection, Video, Audio, RtpPacketizationConfig, H264RtpPacketizer, RtpPacketizer, RtcpSrReporter, RtcpNackResponder } = nodeDataChannel;

/** Stops the library's threads, which otherwise keep the process alive: call it last. */
export function closeLibrary() {
  nodeDataChannel.cleanup();
}

/** An Opus packet of 20 ms of silence (CELT, one frame). */
const OPUS_SILENCE = Buffer.from([0xf8, 0xff, 0xfe]);

/**
 * The access units of an Annex-B H.264 stream, in order: each begins at a parameter set, SEI
 * or access unit delimiter, or at a slice whose first macroblock is 0 (a new picture).
 */
export function accessUnits(annexb) {
  const starts = [];
  for (let i = 0; i + 3 < annexb.length; i += 1) {
    if (annexb[i] === 0 && annexb[i + 1] === 0 && annexb[i + 2] === 1) {
      starts.push(i + 3);
      i += 2;
    }
  }
  const units = [];
  let current = [];
  let hasSlice = false;
  starts.forEach((s, k) => {
    const end = k + 1 < starts.length ? starts[k + 1] - 3 : annexb.length;
    // (A 4-byte start code leaves a zero at the end of the NAL before it: trimmed below.)
    const nal = annexb.subarray(s, end);
    const type = nal[0] & 0x1f;
    const slice = type === 1 || type === 5;
    const newPicture = slice ? (nal[1] & 0x80) !== 0 : [6, 7, 8, 9].includes(type);
    if (newPicture && hasSlice) {
      units.push(current);
      current = [];
      hasSlice = false;
    }
    current.push(nal);
    hasSlice ||= slice;
  });
  if (current.length) units.push(current);
  const sc = Buffer.from([0, 0, 0, 1]);
  return units.map((nals) => Buffer.concat(nals.flatMap((n) => [sc, trimZeros(n)])));
}

function trimZeros(nal) {
  let end = nal.length;
  while (end > 1 && nal[end - 1] === 0) end -= 1;
  return nal.subarray(0, end);
}

function track(pc, media, ssrc, pt, clockRate, packetizer) {
  const config = new RtpPacketizationConfig(ssrc, 'itg-obs-like', pt, clockRate);
  const p = packetizer(config);
  p.addToChain(new RtcpSrReporter(config));
  p.addToChain(new RtcpNackResponder());
  const t = pc.addTrack(media);
  t.setMediaHandler(p);
  return { track: t, config };
}

/**
 * Publishes `video` (an Annex-B file at `fps`) to the WHIP endpoint `url` with `key` for
 * `seconds`; resolves with what happened (`status`, `connected_ms`, `frames_sent`, `state`,
 * `error`, and the library's version). `bindAddress`: the address libjuice gathers on.
 */
export async function publishLikeObs({ url, key, video, seconds, fps = 30, bindAddress = '127.0.0.1' }) {
  const result = { library: `libdatachannel ${nodeDataChannel.getLibraryVersion()}`, status: null, state: 'new', frames_sent: 0, error: null };
  const pc = new PeerConnection('obs-like', { iceServers: [], bindAddress });
  const began = Date.now();
  pc.onStateChange((s) => {
    result.state = s;
    if (s === 'connected') result.connected_ms = Date.now() - began;
  });
  const audio = new Audio('0', 'SendOnly');
  audio.addOpusCodec(111);
  audio.addSSRC(1111, 'itg-obs-like', 'obs', 'obs-audio');
  const a = track(pc, audio, 1111, 111, 48000, (c) => new RtpPacketizer(c));
  const vdesc = new Video('1', 'SendOnly');
  vdesc.addH264Codec(96);
  vdesc.addSSRC(2222, 'itg-obs-like', 'obs', 'obs-video');
  const v = track(pc, vdesc, 2222, 96, 90000, (c) => new H264RtpPacketizer('StartSequence', c, 1200));
  const gathered = new Promise((resolve) => pc.onGatheringStateChange((s) => { if (s === 'complete') resolve(); }));
  pc.setLocalDescription();
  await gathered;
  let location = null;
  const headers = { 'Content-Type': 'application/sdp', Authorization: `Bearer ${key}` };
  try {
    const r = await fetch(url, { method: 'POST', headers, body: pc.localDescription().sdp });
    result.status = r.status;
    const body = await r.text();
    if (r.status !== 201) throw new Error(`WHIP answered ${r.status}: ${body.trim()}`);
    location = new URL(r.headers.get('location'), url).href;
    pc.setRemoteDescription(body, 'answer');
    const open = (t) => new Promise((resolve) => (t.isOpen() ? resolve() : t.onOpen(resolve)));
    await Promise.race([Promise.all([open(a.track), open(v.track)]),
      new Promise((_, reject) => setTimeout(() => reject(new Error(`the tracks did not open (state ${result.state})`)), 10000))]);
    const units = accessUnits(readFileSync(video));
    const start = Date.now();
    let frame = 0;
    let audioAt = 0;
    while (Date.now() - start < seconds * 1000) {
      const due = start + (frame * 1000) / fps;
      while (Date.now() < due) await new Promise((r) => setTimeout(r, Math.min(5, due - Date.now())));
      // Audio up to now, 20 ms a packet.
      while (audioAt <= Date.now() - start) {
        a.config.timestamp = Math.round((audioAt * 48000) / 1000) >>> 0;
        a.track.sendMessageBinary(OPUS_SILENCE);
        audioAt += 20;
      }
      v.config.timestamp = Math.round((frame * 90000) / fps) >>> 0;
      v.track.sendMessageBinary(units[frame % units.length]);
      frame += 1;
      result.frames_sent = frame;
    }
  } catch (e) {
    result.error = String(e.message || e);
  } finally {
    if (location) await fetch(location, { method: 'DELETE', headers }).catch(() => {});
    pc.close();
  }
  return result;
}
