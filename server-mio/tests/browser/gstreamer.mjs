// GStreamer's webrtcbin (Debian 12's GStreamer 1.22, through tests/gst/itg_gst.py) against the
// real server in both directions, inside the loopback-only namespace the caller made:
//
// - it publishes 640x360 x264 + Opus over WHIP with the stream key; its DTLS certificate is
//   RSA-2048 (GStreamer's own), which the server's DTLS must take;
// - a second webrtcbin watches that stream over WHEP and decodes it at 640x360 with sound, for
//   20 s: libnice sends no binding requests once connected, and both sessions outlive str0m's
//   15 s ICE-lite cutoff on the requests the server makes for them from their traffic;
// - it watches an FTL stream (our client, the fixture) over WHEP;
// - a wrong key is refused with 401 before any WebRTC state is made;
// - it publishes H.265 (x265, as OBS's HEVC over WHIP) and another webrtcbin watches it in
//   H.265 at its size; a viewer that offers H.264 only is refused with 406 naming H.265; the
//   recording of the H.265 stream reads back in ffprobe as HEVC at its size.
//
// Environment: ITG_SERVER_BIN, ITG_CLIENT_BIN, ITG_VIDEO, ITG_AUDIO, ITG_GST, ITG_ARTIFACTS.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { env, until, serveLiveChannel, finish, gstreamer } from './lib.mjs';

const ARTIFACTS = env('ITG_ARTIFACTS');
const GST = env('ITG_GST');
const SERVER = env('ITG_SERVER_BIN');

const gst = (mode, url, extra = [], seconds = 6) => gstreamer(GST, mode, url, extra, seconds);

let error;
const dir = mkdtempSync(join(tmpdir(), 'itg-gst-'));
const summary = {};
try {
  mkdirSync(ARTIFACTS, { recursive: true });
  // Channel 77 carries our FTL client's fixture; 78 is for GStreamer's WHIP.
  const HTTP = await serveLiveChannel({ dir, http: 18300, ftl: 18304, webrtc: 20300, media: '19300-19310', extra: ['--record'] });
  const key78 = execFileSync(SERVER, ['keys', 'add', '--data-dir', `${dir}/data`, '--channel', '78', '--name', 'GStreamer'])
    .toString().trim().split('\n').pop();
  await until('the new channel', 5000, async () => (await (await fetch(`${HTTP}/api/streams`)).json()).streams.some((s) => s.channel === 78));

  // GStreamer watches the FTL stream.
  const watchFtl = await gst('watch', `${HTTP}/whep/77`);
  summary.watch_ftl = watchFtl;
  if (watchFtl.code !== 0 || watchFtl.width !== 320 || watchFtl.height !== 180 || watchFtl.frames < 60 || watchFtl.audio_buffers < 50) {
    throw new Error(`GStreamer as a WHEP viewer: ${JSON.stringify(watchFtl)}`);
  }

  // A wrong key: 401, no session.
  const wrong = await gst('publish', `${HTTP}/whip/78`, ['--key', '78-wrong'], 3);
  summary.wrong_key = { code: wrong.code, status: wrong.status, error: wrong.error };
  if (wrong.code === 0 || wrong.status !== 401) throw new Error(`a wrong key: ${JSON.stringify(wrong)}`);

  // GStreamer publishes over WHIP; another webrtcbin watches it.
  const metric = async (re) => Number((re.exec(await (await fetch(`${HTTP}/metrics`)).text()) || [])[1] || 0);
  const rsaBefore = await metric(/^itg_dtls_handshakes_total\{peer_key="rsa"\} (\d+)/m);
  const keepalivesBefore = await metric(/^itg_ice_keepalives_total (\d+)/m);
  const publishing = gst('publish', `${HTTP}/whip/78`, ['--key', key78, '--width', '640', '--height', '360', '--kbps', '1200'], 24);
  await until('channel 78 live over WHIP', 10000, async () => (await (await fetch(`${HTTP}/api/streams`)).json())
    .streams.some((s) => s.channel === 78 && s.live && s.protocol === 'whip'));
  const watchWhip = await gst('watch', `${HTTP}/whep/78`, [], 20);
  // More than 15 s in, the publisher is still live.
  const info = (await (await fetch(`${HTTP}/api/streams`)).json()).streams.find((s) => s.channel === 78 && s.live);
  const keepalives = (await metric(/^itg_ice_keepalives_total (\d+)/m)) - keepalivesBefore;
  const published = await publishing;
  const rsa = (await metric(/^itg_dtls_handshakes_total\{peer_key="rsa"\} (\d+)/m)) - rsaBefore;
  summary.publish = published;
  summary.watch_whip = watchWhip;
  summary.stream = { width: info?.width, height: info?.height, codecs: info?.codecs, bitrate_bps: info?.bitrate_bps, congestion_control: info?.congestion_control };
  summary.rsa_handshakes = rsa;
  summary.keepalives = keepalives;
  if (published.code !== 0) throw new Error(`GStreamer as a WHIP publisher: ${JSON.stringify(published)}`);
  if (rsa < 1) throw new Error('no handshake with an RSA certificate was counted');
  if (!info) throw new Error('the GStreamer publisher was let go within 20 s');
  if (!(info.width === 640 && info.height === 360 && info.codecs.includes('opus'))) throw new Error(`the server saw ${JSON.stringify(summary.stream)}`);
  // Frames to the end: the viewer was not cut off 15 s in.
  if (watchWhip.code !== 0 || watchWhip.width !== 640 || watchWhip.height !== 360 || watchWhip.frames < 400
    || watchWhip.audio_buffers < 500 || !(watchWhip.last_frame_ms > 17000)) {
    throw new Error(`GStreamer watching GStreamer: ${JSON.stringify(watchWhip)}`);
  }
  // Each of the two had requests made for it (one every 7 s once it stopped asking).
  if (keepalives < 3) throw new Error(`${keepalives} binding requests made for the GStreamer peers`);

  // H.265 in, H.265 out (channel 79).
  const key79 = execFileSync(SERVER, ['keys', 'add', '--data-dir', `${dir}/data`, '--channel', '79', '--name', 'HEVC'])
    .toString().trim().split('\n').pop();
  await until('channel 79', 5000, async () => (await (await fetch(`${HTTP}/api/streams`)).json()).streams.some((s) => s.channel === 79));
  const hevcPublishing = gst('publish', `${HTTP}/whip/79`, ['--key', key79, '--codec', 'h265', '--width', '640', '--height', '360', '--kbps', '1200'], 12);
  await until('channel 79 live in H.265', 10000, async () => (await (await fetch(`${HTTP}/api/streams`)).json())
    .streams.some((s) => s.channel === 79 && s.live && s.codec === 'H265'));
  const hevcWatch = await gst('watch', `${HTTP}/whep/79`, ['--codec', 'h265'], 5);
  const h264Only = await gst('watch', `${HTTP}/whep/79`, [], 2);
  const hevcInfo = (await (await fetch(`${HTTP}/api/streams`)).json()).streams.find((s) => s.channel === 79);
  // Its thumbnail: an H.265 keyframe decoded by ffmpeg.
  let hevcThumb = null;
  await until('a thumbnail of the H.265 stream', 10000, async () => {
    const r = await fetch(`${HTTP}/thumbnails/79.jpg`);
    hevcThumb = r.status === 200 ? r.headers.get('x-itg-thumbnail-size') : null;
    return hevcThumb;
  });
  if (hevcThumb !== '640x360') throw new Error(`the H.265 thumbnail is ${hevcThumb}`);
  const hevcPublished = await hevcPublishing;
  summary.hevc = { publish: hevcPublished, watch: hevcWatch, h264_only: { code: h264Only.code, status: h264Only.status, error: h264Only.error }, stream: { codec: hevcInfo.codec, profile: hevcInfo.profile, width: hevcInfo.width, height: hevcInfo.height } };
  if (hevcPublished.code !== 0) throw new Error(`GStreamer publishing H.265: ${JSON.stringify(hevcPublished)}`);
  if (!(hevcInfo.width === 640 && hevcInfo.height === 360)) throw new Error(`the server saw ${JSON.stringify(summary.hevc.stream)}`);
  if (hevcWatch.code !== 0 || hevcWatch.width !== 640 || hevcWatch.height !== 360 || hevcWatch.frames < 60) {
    throw new Error(`GStreamer watching H.265: ${JSON.stringify(hevcWatch)}`);
  }
  if (h264Only.status !== 406) throw new Error(`an H.264-only viewer of an H.265 stream: ${JSON.stringify(summary.hevc.h264_only)}`);
  let rec = null;
  await until('the H.265 recording', 15000, async () => {
    rec = (await (await fetch(`${HTTP}/api/recordings?channel=79`)).json()).recordings.find((r) => !r.recording && r.duration_s > 2);
    return rec;
  });
  const file = join(dir, 'hevc.mp4');
  writeFileSync(file, Buffer.from(await (await fetch(`${HTTP}${rec.url}`)).arrayBuffer()));
  // The recording's poster, its first keyframe.
  if (!rec.poster) throw new Error(`the H.265 recording has no poster: ${JSON.stringify(rec)}`);
  const posterFile = join(dir, 'hevc.jpg');
  writeFileSync(posterFile, Buffer.from(await (await fetch(`${HTTP}${rec.poster}`)).arrayBuffer()));
  const poster = JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-show_streams', '-of', 'json', posterFile]).toString()).streams[0];
  if (poster.width !== 640 || poster.height !== 360) throw new Error(`the H.265 poster is ${poster.width}x${poster.height}`);
  const probe = JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-count_frames', '-show_streams', '-of', 'json', file]).toString());
  const hv = probe.streams.find((x) => x.codec_type === 'video');
  summary.hevc.recording = { codec: hv?.codec_name, tag: hv?.codec_tag_string, width: hv?.width, height: hv?.height, frames: hv?.nb_read_frames };
  if (!(hv && hv.codec_name === 'hevc' && hv.codec_tag_string === 'hvc1' && hv.width === 640 && hv.height === 360 && Number(hv.nb_read_frames) > 30)) {
    throw new Error(`the H.265 recording: ${JSON.stringify(summary.hevc.recording)}`);
  }

  writeFileSync(join(ARTIFACTS, 'gstreamer-summary.json'), JSON.stringify(summary, null, 2));
  console.log(`GStreamer test passed: ${JSON.stringify({ watch_ftl_first_frame_ms: watchFtl.first_frame_ms, publish_connected_ms: published.connected_ms, watch_whip_frames: watchWhip.frames, hevc_first_frame_ms: hevcWatch.first_frame_ms, hevc_frames: hevcWatch.frames })}`);
} catch (e) {
  error = e;
  writeFileSync(join(ARTIFACTS, 'gstreamer-summary.json'), JSON.stringify(summary, null, 2));
} finally {
  await finish({ error, name: 'GStreamer test', dir, artifacts: ARTIFACTS });
}
