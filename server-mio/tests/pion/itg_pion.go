// A WHIP publisher and WHEP viewer on Pion (github.com/pion/webrtc/v3, as Debian 12 packages it),
// the Go WebRTC stack under most Go streaming tools, for the interop tests.
//
//	itg_pion publish --url URL --key KEY --video FILE --audio FILE.ogg --seconds N
//	itg_pion watch --url URL --codec h264|vp8 --out FILE --seconds N
//
// The publisher sends an Annex-B H.264 file (grouped into access units) or an IVF VP8 file at
// its frame rate, looped, and an Ogg Opus file with one packet per page. The viewer writes the
// video it receives to FILE (Annex-B H.264 or IVF) for ffprobe to decode, and counts what came.
// Both end the session with DELETE on the resource the server named, then print one JSON line.
//
// Pion's own defaults stand: full ICE (it checks and keeps the pair alive itself), its DTLS
// certificate (ECDSA P-256), NACK both ways, receiver and sender reports, transport-wide
// feedback from the viewer. Only loopback candidates are switched on: the tests run in a
// network namespace with loopback alone.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v3"
	"github.com/pion/webrtc/v3/pkg/media"
	"github.com/pion/webrtc/v3/pkg/media/h264reader"
	"github.com/pion/webrtc/v3/pkg/media/h264writer"
	"github.com/pion/webrtc/v3/pkg/media/ivfreader"
	"github.com/pion/webrtc/v3/pkg/media/ivfwriter"
	"github.com/pion/webrtc/v3/pkg/media/oggreader"
)

// The version Debian packages (golang-github-pion-webrtc.v3-dev).
const pionVersion = "3.1.56"

type result struct {
	Pion          string `json:"pion"`
	Mode          string `json:"mode"`
	Status        int    `json:"status,omitempty"`
	Error         string `json:"error,omitempty"`
	Codec         string `json:"codec,omitempty"`
	Connected     bool   `json:"connected"`
	ConnectMs     int64  `json:"connect_ms,omitempty"`
	VideoPackets  int    `json:"video_packets"`
	VideoBytes    int    `json:"video_bytes"`
	Frames        int    `json:"frames"`
	Keyframes     int    `json:"keyframes"`
	FirstVideoMs  int64  `json:"first_video_ms,omitempty"`
	SeqGaps       int    `json:"seq_gaps"`
	AudioPackets  int    `json:"audio_packets"`
	FramesSent    int    `json:"frames_sent,omitempty"`
	AudioSent     int    `json:"audio_sent,omitempty"`
	PLIs          int    `json:"plis"`
	NACKs         int    `json:"nacks"`
	DeleteStatus  int    `json:"delete_status,omitempty"`
	FailedAfterMs int64  `json:"failed_after_ms,omitempty"`
	mu            sync.Mutex
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: itg_pion publish|watch [flags]")
		os.Exit(2)
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	target := fs.String("url", "", "WHIP or WHEP endpoint")
	key := fs.String("key", "", "stream key (Bearer), for publish")
	video := fs.String("video", "", "Annex-B .h264 or .ivf (VP8) to publish")
	audio := fs.String("audio", "", "Ogg Opus to publish, one packet per page")
	codec := fs.String("codec", "h264", "the video codec a viewer offers: h264 or vp8")
	out := fs.String("out", "", "where a viewer writes the video it gets")
	seconds := fs.Float64("seconds", 6, "how long to stay")
	_ = fs.Parse(os.Args[2:])

	res := &result{Pion: pionVersion, Mode: mode}
	var err error
	switch mode {
	case "publish":
		err = publish(res, *target, *key, *video, *audio, *seconds)
	case "watch":
		err = watch(res, *target, *codec, *out, *seconds)
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		res.Error = err.Error()
	}
	res.mu.Lock()
	line, _ := json.Marshal(res)
	res.mu.Unlock()
	fmt.Println(string(line))
	if err != nil {
		os.Exit(1)
	}
}

// newAPI is Pion with its default codecs and interceptors, gathering on loopback over UDP.
func newAPI(onlyCodec string) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	if onlyCodec == "" {
		if err := m.RegisterDefaultCodecs(); err != nil {
			return nil, err
		}
	} else {
		// A viewer that takes one video codec (and Opus), as a tool built for one would.
		fb := []webrtc.RTCPFeedback{{Type: "goog-remb"}, {Type: "ccm", Parameter: "fir"},
			{Type: "nack"}, {Type: "nack", Parameter: "pli"}}
		var v webrtc.RTPCodecCapability
		switch onlyCodec {
		case "h264":
			v = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
				SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f", RTCPFeedback: fb}
		case "vp8":
			v = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: fb}
		default:
			return nil, fmt.Errorf("unknown codec %q", onlyCodec)
		}
		if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: v, PayloadType: 102}, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, err
		}
		rtx := webrtc.RTPCodecCapability{MimeType: "video/rtx", ClockRate: 90000, SDPFmtpLine: "apt=102"}
		if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: rtx, PayloadType: 103}, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, err
		}
		opus := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}
		if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: opus, PayloadType: 111}, webrtc.RTPCodecTypeAudio); err != nil {
			return nil, err
		}
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, reg); err != nil {
		return nil, err
	}
	s := webrtc.SettingEngine{}
	s.SetIncludeLoopbackCandidate(true)
	s.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(s)), nil
}

// newPeer is a peer connection of newAPI(onlyCodec).
func newPeer(onlyCodec string) (*webrtc.PeerConnection, error) {
	api, err := newAPI(onlyCodec)
	if err != nil {
		return nil, err
	}
	return api.NewPeerConnection(webrtc.Configuration{})
}

// awaitUp waits up to 10 s for the connection to come up.
func awaitUp(up, down <-chan struct{}) error {
	select {
	case <-up:
		return nil
	case <-down:
		return errors.New("the connection failed before it was up")
	case <-time.After(10 * time.Second):
		return errors.New("not connected within 10 s")
	}
}

// signal posts the offer once gathering is complete and applies the answer; returns the
// session's resource URL.
func signal(res *result, pc *webrtc.PeerConnection, endpoint, key string) (string, error) {
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return "", err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err = pc.SetLocalDescription(offer); err != nil {
		return "", err
	}
	select {
	case <-gathered:
	case <-time.After(5 * time.Second):
		return "", errors.New("ICE gathering did not complete in 5 s")
	}
	req, err := http.NewRequest("POST", endpoint, strings.NewReader(pc.LocalDescription().SDP))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/sdp")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	res.Status = resp.StatusCode
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("%s answered %d: %s", endpoint, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if err = pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		return "", err
	}
	base, err := url.Parse(endpoint)
	if err != nil {
		return "", err
	}
	loc, err := base.Parse(resp.Header.Get("Location"))
	if err != nil {
		return "", err
	}
	return loc.String(), nil
}

// hangUp ends the session as WHIP and WHEP say: DELETE on its resource.
func hangUp(res *result, resource, key string) {
	req, err := http.NewRequest("DELETE", resource, nil)
	if err != nil {
		return
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	if resp, err := client.Do(req); err == nil {
		res.DeleteStatus = resp.StatusCode
		resp.Body.Close()
	}
}

// connected waits for the DTLS-connected state (or failure) and records when it came.
func connected(res *result, pc *webrtc.PeerConnection, began time.Time) (<-chan struct{}, <-chan struct{}) {
	up := make(chan struct{})
	down := make(chan struct{})
	var once, failOnce sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		fmt.Fprintf(os.Stderr, "connection %s\n", s)
		switch s {
		case webrtc.PeerConnectionStateConnected:
			once.Do(func() {
				res.mu.Lock()
				res.Connected = true
				res.ConnectMs = time.Since(began).Milliseconds()
				res.mu.Unlock()
				close(up)
			})
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateDisconnected, webrtc.PeerConnectionStateClosed:
			failOnce.Do(func() {
				res.mu.Lock()
				res.FailedAfterMs = time.Since(began).Milliseconds()
				res.mu.Unlock()
				close(down)
			})
		}
	})
	return up, down
}

// readFeedback counts the keyframe requests and NACKs the server sends a publisher.
func readFeedback(res *result, sender *webrtc.RTPSender) {
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range pkts {
			name := fmt.Sprintf("%T", p)
			res.mu.Lock()
			switch {
			case strings.HasSuffix(name, "PictureLossIndication"), strings.HasSuffix(name, "FullIntraRequest"):
				res.PLIs++
			case strings.HasSuffix(name, "TransportLayerNack"):
				res.NACKs++
			}
			res.mu.Unlock()
		}
	}
}

func publish(res *result, endpoint, key, videoPath, audioPath string, seconds float64) error {
	vp8 := strings.HasSuffix(videoPath, ".ivf")
	pc, err := newPeer("")
	if err != nil {
		return err
	}
	defer pc.Close()
	videoCap := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}
	res.Codec = "h264"
	if vp8 {
		videoCap = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
		res.Codec = "vp8"
	}
	videoTrack, err := webrtc.NewTrackLocalStaticSample(videoCap, "video", "itg-pion")
	if err != nil {
		return err
	}
	audioTrack, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "itg-pion")
	if err != nil {
		return err
	}
	for _, t := range []*webrtc.TrackLocalStaticSample{videoTrack, audioTrack} {
		tr, err := pc.AddTransceiverFromTrack(t, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		if err != nil {
			return err
		}
		go readFeedback(res, tr.Sender())
	}
	began := time.Now()
	up, down := connected(res, pc, began)
	resource, err := signal(res, pc, endpoint, key)
	if err != nil {
		return err
	}
	defer hangUp(res, resource, key)
	if err := awaitUp(up, down); err != nil {
		return err
	}
	stop := make(chan struct{})
	errs := make(chan error, 2)
	go func() { errs <- sendVideo(res, videoTrack, videoPath, vp8, stop) }()
	go func() { errs <- sendAudio(res, audioTrack, audioPath, stop) }()
	select {
	case <-time.After(time.Duration(seconds * float64(time.Second))):
	case <-down:
		close(stop)
		return errors.New("the connection went down while publishing")
	case err := <-errs:
		close(stop)
		return err
	}
	close(stop)
	return nil
}

// ticker paces samples at `every`, on a schedule that does not drift.
func pace(start time.Time, n int, every time.Duration, stop <-chan struct{}) bool {
	select {
	case <-stop:
		return false
	case <-time.After(time.Until(start.Add(time.Duration(n) * every))):
		return true
	}
}

// sendSamples writes what load gives, one sample every `every`, from the start again at its
// end, until stop; sent counts them.
func sendSamples(res *result, track *webrtc.TrackLocalStaticSample, load func() ([][]byte, error),
	every time.Duration, sent *int, stop <-chan struct{}) error {
	start := time.Now()
	n := 0
	for {
		samples, err := load()
		if err != nil {
			return err
		}
		if len(samples) == 0 {
			return errors.New("nothing to send in the file")
		}
		for _, f := range samples {
			if !pace(start, n, every, stop) {
				return nil
			}
			if err := track.WriteSample(media.Sample{Data: f, Duration: every}); err != nil {
				return err
			}
			n++
			res.mu.Lock()
			*sent = n
			res.mu.Unlock()
		}
	}
}

func sendVideo(res *result, track *webrtc.TrackLocalStaticSample, path string, vp8 bool, stop <-chan struct{}) error {
	read := func(r io.Reader) ([][]byte, error) { return readFrames(r, vp8) }
	return sendSamples(res, track, fromFile(path, read), time.Second/30, &res.FramesSent, stop)
}

// readFrames splits a file into frames: IVF frames, or H.264 access units. An access unit
// ends where the next begins: at a parameter set, SEI or delimiter after a slice, or at a slice
// whose first_mb_in_slice is 0 (x264 with sliced threads writes several slices a picture).
func readFrames(r io.Reader, vp8 bool) ([][]byte, error) {
	var frames [][]byte
	if vp8 {
		ivf, _, err := ivfreader.NewWith(r)
		if err != nil {
			return nil, err
		}
		return readAll(func() ([]byte, error) {
			f, _, err := ivf.ParseNextFrame()
			return f, err
		})
	}
	h, err := h264reader.NewReader(r)
	if err != nil {
		return nil, err
	}
	var au bytes.Buffer
	slices := false
	flush := func() {
		if slices {
			frames = append(frames, append([]byte(nil), au.Bytes()...))
		}
		au.Reset()
		slices = false
	}
	for {
		nal, err := h.NextNAL()
		if errors.Is(err, io.EOF) {
			flush()
			return frames, nil
		}
		if err != nil {
			return nil, err
		}
		if len(nal.Data) < 2 {
			continue
		}
		t := nal.UnitType
		slice := t == h264reader.NalUnitTypeCodedSliceNonIdr || t == h264reader.NalUnitTypeCodedSliceIdr
		// first_mb_in_slice is ue(v): 0 is the single bit 1.
		firstSlice := slice && nal.Data[1]&0x80 != 0
		if slices && (!slice || firstSlice) {
			flush()
		}
		au.Write([]byte{0, 0, 0, 1})
		au.Write(nal.Data)
		slices = slices || slice
	}
}

func sendAudio(res *result, track *webrtc.TrackLocalStaticSample, path string, stop <-chan struct{}) error {
	return sendSamples(res, track, fromFile(path, readPages), 20*time.Millisecond, &res.AudioSent, stop)
}

// readPages reads an Ogg Opus file's audio pages (one Opus packet each, as ffmpeg writes them
// with -page_duration 20000); OpusHead, which the reader takes, and OpusTags carry no audio.
func readPages(r io.Reader) ([][]byte, error) {
	ogg, _, err := oggreader.NewWith(r)
	if err != nil {
		return nil, err
	}
	return readAll(func() ([]byte, error) {
		page, _, err := ogg.ParseNextPage()
		if err == nil && bytes.HasPrefix(page, []byte("OpusTags")) {
			return nil, nil
		}
		return page, err
	})
}

// readAll collects what next gives (nil: skip it) until io.EOF.
func readAll(next func() ([]byte, error)) ([][]byte, error) {
	var out [][]byte
	for {
		b, err := next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if b != nil {
			out = append(out, b)
		}
	}
}

// fromFile is a loader of what read takes from the file at path, opened afresh each time.
func fromFile(path string, read func(io.Reader) ([][]byte, error)) func() ([][]byte, error) {
	return func() ([][]byte, error) {
		file, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer file.Close()
		return read(file)
	}
}

// isKeyframe tells a keyframe's packets: an IDR slice or parameter set in H.264 (single,
// STAP-A or the first FU-A fragment), a key picture's first partition in VP8.
func isKeyframe(payload []byte, vp8 bool) bool {
	if len(payload) < 2 {
		return false
	}
	if vp8 {
		var d codecs.VP8Packet
		body, err := d.Unmarshal(payload)
		return err == nil && d.S == 1 && d.PID == 0 && len(body) > 0 && body[0]&1 == 0
	}
	switch t := payload[0] & 0x1f; t {
	case 5, 7:
		return true
	case 24: // STAP-A
		for i := 1; i+2 < len(payload); {
			size := int(payload[i])<<8 | int(payload[i+1])
			if nt := payload[i+2] & 0x1f; nt == 5 || nt == 7 {
				return true
			}
			i += 2 + size
		}
	case 28: // FU-A
		return payload[1]&0x80 != 0 && payload[1]&0x1f == 5
	}
	return false
}

type writer interface {
	WriteRTP(*rtp.Packet) error
	Close() error
}

func watch(res *result, endpoint, codec, out string, seconds float64) error {
	pc, err := newPeer(codec)
	if err != nil {
		return err
	}
	defer pc.Close()
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			return err
		}
	}
	began := time.Now()
	var files []writer
	var filesMu sync.Mutex
	filesClosed := false
	pc.OnTrack(func(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		mime := strings.ToLower(track.Codec().MimeType)
		if track.Kind() == webrtc.RTPCodecTypeAudio {
			for {
				if _, _, err := track.ReadRTP(); err != nil {
					return
				}
				res.mu.Lock()
				res.AudioPackets++
				res.mu.Unlock()
			}
		}
		vp8 := mime == strings.ToLower(webrtc.MimeTypeVP8)
		res.mu.Lock()
		res.Codec = strings.TrimPrefix(mime, "video/")
		res.mu.Unlock()
		var w writer
		var err error
		if out != "" {
			if vp8 {
				w, err = ivfwriter.New(out)
			} else {
				w, err = h264writer.New(out)
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", out, err)
				w = nil
			} else {
				filesMu.Lock()
				files = append(files, w)
				filesMu.Unlock()
			}
		}
		var lastTs uint32
		var lastSeq uint16
		first := true
		for {
			p, _, err := track.ReadRTP()
			if err != nil {
				return
			}
			res.mu.Lock()
			if res.VideoPackets == 0 {
				res.FirstVideoMs = time.Since(began).Milliseconds()
			}
			res.VideoPackets++
			res.VideoBytes += len(p.Payload)
			if first || p.Timestamp != lastTs {
				res.Frames++
			}
			if !first && p.SequenceNumber != lastSeq+1 && int16(p.SequenceNumber-lastSeq) > 0 {
				res.SeqGaps++
			}
			if isKeyframe(p.Payload, vp8) && (first || p.Timestamp != lastTs || res.Keyframes == 0) {
				res.Keyframes++
			}
			res.mu.Unlock()
			if int16(p.SequenceNumber-lastSeq) > 0 || first {
				lastSeq = p.SequenceNumber
			}
			lastTs = p.Timestamp
			first = false
			if w != nil {
				filesMu.Lock()
				if filesClosed {
					// the watch is over
				} else if err := w.WriteRTP(p); err != nil {
					fmt.Fprintf(os.Stderr, "writing %s: %v\n", out, err)
				}
				filesMu.Unlock()
			}
		}
	})
	up, down := connected(res, pc, began)
	resource, err := signal(res, pc, endpoint, "")
	if err != nil {
		return err
	}
	defer hangUp(res, resource, "")
	if err := awaitUp(up, down); err != nil {
		return err
	}
	select {
	case <-time.After(time.Duration(seconds * float64(time.Second))):
	case <-down:
		err = errors.New("the connection went down while watching")
	}
	filesMu.Lock()
	for _, w := range files {
		_ = w.Close()
	}
	filesClosed = true
	filesMu.Unlock()
	return err
}
