//! VP8 picture IDs that run on across a viewer's simulcast layer switches.
//!
//! Each VP8 layer numbers its pictures on its own (PictureID, and TL0PICIDX for its base
//! temporal layer). The relay forwards payloads untouched, so at a switch a viewer's picture
//! IDs jumped to another layer's count, and libwebrtc's VP8 reference tracking, which keys on
//! them (Firefox's and Chromium's receivers), could hold the new layer's frames back for
//! seconds. So, per viewer of a VP8 stream, each keyframe sets the mapping that makes its
//! picture ID follow the last one sent (and its TL0PICIDX likewise); every packet is written
//! with its fields rewritten through str0m's `Vp8Patch`, applied as str0m serializes the packet
//! (no copy of the shared payload). Within a layer the mapping is the identity shifted, so the
//! IDs keep the publisher's own gaps and repeats.

use str0m::rtp::{Vp8Descriptor, Vp8Patch};

/// One viewer's VP8 numbering: the offsets from the publisher's fields to the viewer's, and the
/// last of each sent.
#[derive(Debug, Default, Clone)]
pub(in crate::server) struct Vp8Ids {
    picture_delta: u16,
    tl0_delta: u8,
    /// The last picture ID and TL0PICIDX written, and whether it was 15-bit.
    last_picture: Option<(u16, bool)>,
    last_tl0: Option<u8>,
}

impl Vp8Ids {
    /// The patch that writes `payload` (a VP8 RTP payload) in the viewer's numbering; `keyframe`:
    /// the first packet of a keyframe, where the numbering is set afresh to follow on. `None`
    /// where there is nothing to rewrite (no PictureID, an unparsable descriptor: sent as is).
    pub(in crate::server) fn patch(&mut self, payload: &[u8], keyframe: bool) -> Option<Vp8Patch> {
        let d = Vp8Descriptor::parse(payload).ok()?;
        let id = d.picture_id()?;
        let long = payload_long(payload);
        let modulus: u32 = if long { 0x8000 } else { 0x80 };
        if keyframe {
            if let Some((last, _)) = self.last_picture {
                let next = (u32::from(last) + 1) % modulus;
                self.picture_delta = ((next + modulus - u32::from(id) % modulus) % modulus) as u16;
            }
            if let (Some(last), Some(tl0)) = (self.last_tl0, d.tl0_pic_idx()) {
                self.tl0_delta = last.wrapping_add(1).wrapping_sub(tl0);
            }
        }
        let out = ((u32::from(id) + u32::from(self.picture_delta)) % modulus) as u16;
        let mut builder = d.patch().picture_id(out);
        self.last_picture = Some((out, long));
        if let Some(tl0) = d.tl0_pic_idx() {
            let t = tl0.wrapping_add(self.tl0_delta);
            builder = builder.tl0_pic_idx(t);
            self.last_tl0 = Some(t);
        }
        builder.build().ok()
    }
}

/// Whether the payload's PictureID is the 15-bit form (the M bit).
fn payload_long(payload: &[u8]) -> bool {
    // X set, I set: the PictureID's first byte follows the two descriptor bytes.
    matches!(payload, [x, ext, pid, ..] if x & 0x80 != 0 && ext & 0x80 != 0 && pid & 0x80 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 payload descriptor with a 15-bit PictureID and a TL0PICIDX, then `body`.
    fn packet(picture: u16, tl0: u8, start: bool, body: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x80 | if start { 0x10 } else { 0 },
            0x80 | 0x40 | 0x20,
            0x80 | (picture >> 8) as u8,
            picture as u8,
            tl0,
            0x00,
        ];
        p.extend_from_slice(body);
        p
    }

    /// What the viewer gets: the picture ID and TL0PICIDX its patch writes.
    fn sent(ids: &mut Vp8Ids, payload: &[u8], keyframe: bool) -> (u16, u8) {
        assert!(ids.patch(payload, keyframe).is_some());
        (ids.last_picture.unwrap().0, ids.last_tl0.unwrap())
    }

    #[test]
    fn picture_ids_run_on_across_a_switch_and_keep_a_layers_own_steps() {
        // (picture ID, TL0PICIDX, S bit, body, keyframe) as the publisher sends them, and what
        // the viewer gets.
        type Sent<'a> = (u16, u8, bool, &'a [u8], bool);
        let steps: [(Sent, (u16, u8)); 6] = [
            // The first layer as it comes (its first keyframe sets nothing to follow).
            ((1000, 10, true, &[0x10], true), (1000, 10)),
            ((1000, 10, false, &[1], false), (1000, 10)),
            ((1001, 11, true, &[2], false), (1001, 11)),
            // A switch: the other layer's keyframe at 20000 / 200 follows 1001 / 11.
            ((20000, 200, true, &[0x10], true), (1002, 12)),
            ((20001, 200, true, &[3], false), (1003, 12)),
            // Its own gap (a picture lost upstream) stays a gap.
            ((20003, 201, true, &[4], false), (1005, 13)),
        ];
        let mut ids = Vp8Ids::default();
        for ((picture, tl0, start, body, keyframe), want) in steps {
            let got = sent(&mut ids, &packet(picture, tl0, start, body), keyframe);
            assert_eq!(got, want, "publisher's {picture} / {tl0}");
        }
        // Wrapping at 15 bits and at 8.
        let mut ids = Vp8Ids::default();
        sent(&mut ids, &packet(0x7fff, 255, true, &[0x10]), true);
        assert_eq!(sent(&mut ids, &packet(5, 9, true, &[0x10]), true), (0, 0));
        // A keyframe of the same layer changes nothing.
        assert_eq!(sent(&mut ids, &packet(6, 10, true, &[0x10]), true), (1, 1));
    }

    #[test]
    fn what_cannot_be_rewritten_is_sent_as_it_is() {
        let mut ids = Vp8Ids::default();
        // No extension (no PictureID), truncated descriptors, nothing at all.
        assert!(ids.patch(&[0x10, 0x9d, 0x01, 0x2a], true).is_none());
        assert!(ids.patch(&[0x90, 0x80], true).is_none());
        assert!(ids.patch(&[0x90, 0x80, 0x80], true).is_none());
        assert!(ids.patch(&[], false).is_none());
        // A 7-bit PictureID stays 7-bit, wrapping at 128.
        let mut ids = Vp8Ids::default();
        assert!(ids.patch(&[0x90, 0x80, 0x7f, 0xaa], true).is_some());
        assert!(ids.patch(&[0x90, 0x80, 0x05, 0xaa], true).is_some());
        assert_eq!(ids.last_picture, Some((0, false)));
    }
}
