//! A datagram on a media port: classification, then every accessor of whatever it became, and
//! the NACK and sender report parsers on their own.
#![no_main]

use ftl_proto::media::{
    classify, h264, MediaDatagram, MediaParams, Nack, SenderReport, TrackParams,
};
use ftl_proto::Ssrc;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let params = MediaParams {
        video: Some(TrackParams {
            payload_type: 96,
            ssrc: Ssrc(78),
        }),
        audio: Some(TrackParams {
            payload_type: 97,
            ssrc: Ssrc(77),
        }),
    };
    match classify(data, &params) {
        MediaDatagram::Video(p) | MediaDatagram::Audio(p) => {
            let _ = (
                p.marker(),
                p.sequence_number(),
                p.timestamp(),
                p.extension(),
            );
            assert!(p.payload().len() <= data.len());
            let _ = p.csrcs().count();
            let _ = h264::inspect(p.payload());
        }
        MediaDatagram::Ping(p) => {
            assert_eq!(p.echo(), data);
            let _ = p.sent_at_micros();
        }
        MediaDatagram::SenderReport(sr) => {
            assert_eq!(SenderReport::parse(&sr.build()), Ok(sr));
        }
        MediaDatagram::Foreign { .. } | MediaDatagram::Invalid(_) => {}
    }
    if let Ok(n) = Nack::parse(data) {
        assert!(n.lost().count() <= 17 * n.entries.len());
    }
});
