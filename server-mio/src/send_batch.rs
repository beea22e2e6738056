//! Batched UDP sends: every datagram one loop iteration puts out goes to the kernel in as few
//! system calls as possible. `sendmmsg` carries many messages (one per destination run) in one
//! call, and UDP GSO (`UDP_SEGMENT`) lets one message carry several same-size datagrams to one
//! destination (a keyframe's packets to one viewer), which the kernel walks its UDP path for
//! once instead of once per datagram.
//!
//! This is the only place the server speaks to the kernel's batch interfaces (through `nix`'s
//! safe wrappers). The datagrams are the buffers str0m handed out, moved in and pointed at,
//! never copied. Order is kept per destination and overall: messages go out in the order they
//! were pushed. Where the kernel lacks GSO (or refuses it at send time), every datagram is a
//! message of its own, still sent with `sendmmsg`.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};

use log::warn;
use nix::errno::Errno;
use nix::sys::socket::{
    getsockopt, sendmmsg, sockopt, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};

/// Most datagrams in one GSO message: the kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels.
const MAX_SEGMENTS: usize = 64;
/// Most bytes in one GSO message: a UDP datagram's payload limit, with room for headers.
const MAX_GSO_BYTES: usize = 60 * 1024;
/// Most messages in one `sendmmsg` call (the kernel's `UIO_MAXIOV`).
const MAX_MESSAGES: usize = 1024;

/// One message: a run of datagrams to one destination, all `segment` bytes long except
/// perhaps the last (a GSO message), or a single datagram.
#[derive(Debug, Clone, Copy)]
struct Message {
    to: SocketAddr,
    tag: u64,
    /// Index of its first datagram in `datagrams`.
    first: usize,
    count: usize,
    /// The size of every datagram but the last.
    segment: usize,
    bytes: usize,
}

impl Message {
    /// A datagram shorter than the segment size ended it: nothing more can join.
    fn closed(&self) -> bool {
        self.bytes < self.count * self.segment
    }
}

/// What became of the datagrams of one flush.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Datagrams the kernel took.
    pub datagrams: u64,
    /// `sendmmsg` calls made.
    pub calls: u64,
    /// Messages that carried more than one datagram (GSO).
    pub gso_messages: u64,
    /// Datagrams not sent because the socket's buffer was full.
    pub would_block: u64,
    /// Datagrams not sent because the kernel refused them (unreachable, too big, ...).
    pub errors: u64,
}

/// The datagrams of one loop iteration, waiting to be sent.
#[derive(Debug)]
pub struct SendBatch {
    datagrams: Vec<Vec<u8>>,
    messages: Vec<Message>,
    gso: bool,
    /// Tags (the caller's peer ids) of messages that could not be sent in the last flush, in
    /// order (a tag may repeat); how many datagrams is in [`Flushed`].
    dropped: Vec<u64>,
    /// The socket is IPv6 (dual-stack): IPv4 destinations go mapped.
    v6: bool,
}

/// Whether the kernel takes `UDP_SEGMENT` on this socket (Linux 4.18 and later).
pub fn gso_supported(socket: &impl AsFd) -> bool {
    getsockopt(socket, sockopt::UdpGsoSegment).is_ok()
}

impl SendBatch {
    /// An empty batch; `gso` says whether same-size datagrams to one destination may share a
    /// message (see [`gso_supported`]).
    pub fn new(gso: bool) -> Self {
        SendBatch {
            datagrams: Vec::new(),
            messages: Vec::new(),
            gso,
            dropped: Vec::new(),
            v6: false,
        }
    }

    /// For a socket bound to an IPv6 address (dual-stack): IPv4 destinations are written in
    /// their mapped form (see `dual_stack`).
    pub fn for_ipv6_socket(mut self, v6: bool) -> Self {
        self.v6 = v6;
        self
    }

    /// Whether GSO is in use (it is turned off for good if the kernel refuses it once).
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.datagrams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    /// Queues one datagram for `to`; `tag` names whose it is in [`SendBatch::dropped`].
    pub fn push(&mut self, to: SocketAddr, tag: u64, datagram: Vec<u8>) {
        let to = crate::dual_stack::for_socket(to, self.v6);
        let len = datagram.len();
        let index = self.datagrams.len();
        self.datagrams.push(datagram);
        if self.gso {
            if let Some(m) = self.messages.last_mut() {
                let fits = m.to == to
                    && m.tag == tag
                    && !m.closed()
                    && m.count < MAX_SEGMENTS
                    && m.bytes + len <= MAX_GSO_BYTES
                    && len > 0
                    && len <= m.segment;
                if fits {
                    m.count += 1;
                    m.bytes += len;
                    return;
                }
            }
        }
        self.messages.push(Message {
            to,
            tag,
            first: index,
            count: 1,
            segment: len,
            bytes: len,
        });
    }

    /// The tags of messages the last [`SendBatch::flush`] could not send because the socket's
    /// queue was full (a tag may repeat): their peers are behind. Datagrams the kernel refused
    /// outright (a firewall rule, no route) are counted in [`Flushed::errors`] only: lost, as
    /// on the network.
    pub fn dropped(&self) -> &[u64] {
        &self.dropped
    }

    /// Sends everything queued on `socket`, in order, and empties the batch. Never blocks:
    /// what a full socket buffer does not take is dropped and reported, like a lost datagram.
    pub fn flush(&mut self, socket: &(impl AsFd + AsRawFd)) -> Flushed {
        let mut out = Flushed::default();
        self.dropped.clear();
        let mut start = 0;
        while start < self.messages.len() {
            let (end, gso) = self.run_from(start);
            match self.send_run(socket, start, end, gso, &mut out) {
                Ok(()) => start = end,
                Err(RunError::Gso(e)) => {
                    // Some paths refuse segmentation at send time: EIO where the device
                    // cannot do it (from now on, one datagram each), EINVAL for a segment
                    // size past the route's MTU (this batch only).
                    if e == Errno::EIO {
                        warn!("UDP GSO refused by the kernel ({e}); sending datagrams one by one");
                        self.gso = false;
                    }
                    self.split_from(start);
                }
                Err(RunError::Full(at)) => {
                    for m in self.messages.get(at..).unwrap_or_default() {
                        out.would_block += m.count as u64;
                        self.dropped.push(m.tag);
                    }
                    break;
                }
            }
        }
        self.messages.clear();
        self.datagrams.clear();
        out
    }

    /// The run of messages from `start` that one `sendmmsg` call can carry: they share one
    /// GSO size (`UDP_SEGMENT` is one control message for the whole call), where a single
    /// datagram no longer than that size is sent whole.
    fn run_from(&self, start: usize) -> (usize, Option<u16>) {
        let mut gso: Option<usize> = None;
        let mut longest_single = 0;
        let mut end = start;
        for m in self.messages.get(start..).unwrap_or_default() {
            if end - start == MAX_MESSAGES {
                break;
            }
            if m.count > 1 {
                match gso {
                    None if longest_single <= m.segment => gso = Some(m.segment),
                    Some(g) if g == m.segment => {}
                    _ => break,
                }
            } else {
                match gso {
                    None => longest_single = longest_single.max(m.bytes),
                    Some(g) if m.bytes <= g => {}
                    Some(_) => break,
                }
            }
            end += 1;
        }
        (end, gso.and_then(|g| u16::try_from(g).ok()))
    }

    /// Sends messages `start..end` with `sendmmsg`, again from where the kernel stopped until
    /// all are sent. A message the kernel refuses is counted and skipped.
    fn send_run(
        &mut self,
        socket: &impl AsRawFd,
        start: usize,
        end: usize,
        gso: Option<u16>,
        out: &mut Flushed,
    ) -> Result<(), RunError> {
        let mut at = start;
        while at < end {
            let messages = self.messages.get(at..end).unwrap_or_default();
            // One vector of slices for the call, each message a run of it: the messages'
            // datagrams are consecutive in `datagrams`.
            let first = messages.first().map_or(0, |m| m.first);
            let last = messages.last().map_or(0, |m| m.first + m.count);
            let slices: Vec<IoSlice<'_>> = self
                .datagrams
                .get(first..last)
                .unwrap_or_default()
                .iter()
                .map(|d| IoSlice::new(d))
                .collect();
            let iovs: Vec<&[IoSlice<'_>]> = messages
                .iter()
                .map(|m| {
                    slices
                        .get(m.first - first..m.first - first + m.count)
                        .unwrap_or_default()
                })
                .collect();
            let addrs: Vec<Option<SockaddrStorage>> = messages
                .iter()
                .map(|m| Some(SockaddrStorage::from(m.to)))
                .collect();
            let result = match gso {
                Some(size) => {
                    let cmsgs = [ControlMessage::UdpGsoSegments(&size)];
                    let mut headers =
                        MultiHeaders::preallocate(messages.len(), Some(nix::cmsg_space!(u16)));
                    sendmmsg(
                        socket.as_raw_fd(),
                        &mut headers,
                        &iovs,
                        &addrs,
                        cmsgs,
                        MsgFlags::MSG_DONTWAIT,
                    )
                    .map(|r| r.count())
                }
                None => {
                    let mut headers = MultiHeaders::preallocate(messages.len(), None);
                    sendmmsg(
                        socket.as_raw_fd(),
                        &mut headers,
                        &iovs,
                        &addrs,
                        [],
                        MsgFlags::MSG_DONTWAIT,
                    )
                    .map(|r| r.count())
                }
            };
            out.calls += 1;
            match result {
                Ok(n) if n > 0 => {
                    for m in messages.iter().take(n) {
                        out.datagrams += m.count as u64;
                        if m.count > 1 {
                            out.gso_messages += 1;
                        }
                    }
                    at += n;
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) | Err(Errno::ENOBUFS) => return Err(RunError::Full(at)),
                Err(e @ (Errno::EIO | Errno::EINVAL)) if gso.is_some() => {
                    return Err(RunError::Gso(e));
                }
                Err(_) => {
                    // The first message of the call is the one the kernel refused (a firewall
                    // rule's EPERM, an unreachable route): lost on the way like any datagram,
                    // which the peer's NACK repairs; not a sign of a slow peer, which only a
                    // full queue is (EAGAIN, ENOBUFS above).
                    if let Some(m) = messages.first() {
                        out.errors += m.count as u64;
                    }
                    at += 1;
                }
            }
        }
        Ok(())
    }

    /// Turns the messages from `start` on into one message per datagram (GSO is off).
    fn split_from(&mut self, start: usize) {
        let rest: Vec<Message> = self.messages.drain(start..).collect();
        for m in rest {
            for i in 0..m.count {
                let len = self.datagrams.get(m.first + i).map_or(0, Vec::len);
                self.messages.push(Message {
                    first: m.first + i,
                    count: 1,
                    segment: len,
                    bytes: len,
                    ..m
                });
            }
        }
    }
}

enum RunError {
    /// The kernel refused GSO: the run is to be sent again without it.
    Gso(Errno),
    /// The socket's buffer is full from this message on.
    Full(usize),
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    fn receiver() -> (UdpSocket, SocketAddr) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let a = s.local_addr().unwrap();
        (s, a)
    }

    fn recv_all(s: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        (0..n)
            .map(|_| {
                let (len, _) = s.recv_from(&mut buf).unwrap();
                buf[..len].to_vec()
            })
            .collect()
    }

    /// A datagram that says who it is for and where it stands: `[dest, index_hi, index_lo]`
    /// repeated to `len` bytes.
    fn datagram(dest: u8, index: u16, len: usize) -> Vec<u8> {
        let [hi, lo] = index.to_be_bytes();
        [dest, hi, lo].iter().copied().cycle().take(len).collect()
    }

    /// Three destinations, interleaved runs of equal and unequal sizes (a keyframe burst with
    /// a short last packet, audio between), more than one GSO message's worth for one of them.
    /// Datagrams per destination.
    type PerDest = Vec<Vec<Vec<u8>>>;

    fn scenario(gso: bool) -> (SendBatch, Flushed, PerDest, PerDest) {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.set_nonblocking(true).unwrap();
        let rx: Vec<(UdpSocket, SocketAddr)> = (0..3).map(|_| receiver()).collect();
        let mut batch = SendBatch::new(gso && gso_supported(&sender));
        let mut expected: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 3];
        let mut index = 0u16;
        let mut push = |batch: &mut SendBatch, dest: usize, len: usize| {
            let d = datagram(dest as u8, index, len);
            index += 1;
            expected[dest].push(d.clone());
            batch.push(rx[dest].1, dest as u64, d);
        };
        for round in 0..3 {
            for dest in 0..3 {
                // 70 full packets: over one GSO message (64 segments), then a short one.
                let full = if dest == 0 && round == 1 { 70 } else { 5 };
                for _ in 0..full {
                    push(&mut batch, dest, 1100);
                }
                push(&mut batch, dest, 700);
                push(&mut batch, dest, 1100);
                push(&mut batch, dest, 90);
            }
        }
        // A datagram no larger than one byte and an empty one are sent as they are.
        push(&mut batch, 2, 1);
        push(&mut batch, 1, 0);
        let flushed = batch.flush(&sender);
        let got: Vec<Vec<Vec<u8>>> = rx
            .iter()
            .zip(&expected)
            .map(|((s, _), e)| recv_all(s, e.len()))
            .collect();
        (batch, flushed, got, expected)
    }

    #[test]
    fn sends_exactly_what_it_was_given_with_gso() {
        let (batch, flushed, got, expected) = scenario(true);
        assert!(batch.gso(), "loopback takes UDP_SEGMENT on Linux 4.18+");
        let total: usize = expected.iter().map(Vec::len).sum();
        assert_eq!(got, expected, "order, boundaries and destinations");
        assert_eq!(flushed.datagrams, total as u64);
        assert!(flushed.gso_messages >= 10, "{flushed:?}");
        assert!(
            flushed.calls < 10,
            "sendmmsg carried many messages: {flushed:?}"
        );
        assert_eq!(flushed.errors + flushed.would_block, 0);
        assert!(batch.is_empty());
    }

    #[test]
    fn sends_exactly_what_it_was_given_without_gso() {
        let (batch, flushed, got, expected) = scenario(false);
        assert!(!batch.gso());
        let total: usize = expected.iter().map(Vec::len).sum();
        assert_eq!(got, expected, "order, boundaries and destinations");
        assert_eq!(flushed.datagrams, total as u64);
        assert_eq!(flushed.gso_messages, 0);
        assert_eq!(flushed.calls, 1, "one sendmmsg for {total} datagrams");
    }

    /// A datagram the kernel refuses (here: an IPv6 destination on an IPv4 socket; on a
    /// host, a firewall's EPERM) is counted as an error, like a loss, and its peer is not
    /// reported behind: only a full queue says that.
    #[test]
    fn a_refused_destination_is_counted_and_the_rest_goes_out() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.set_nonblocking(true).unwrap();
        let (rx, addr) = receiver();
        let mut batch = SendBatch::new(gso_supported(&sender));
        batch.push(addr, 1, datagram(1, 0, 100));
        // An IPv6 destination on an IPv4 socket: the kernel refuses that one message.
        batch.push("[::1]:9".parse().unwrap(), 7, datagram(7, 1, 100));
        batch.push(addr, 1, datagram(1, 2, 100));
        let flushed = batch.flush(&sender);
        assert_eq!(flushed.datagrams, 2);
        assert_eq!(flushed.errors, 1);
        assert!(
            batch.dropped().is_empty(),
            "a refused send is a loss, not a slow peer"
        );
        let got = recv_all(&rx, 2);
        assert_eq!(got, vec![datagram(1, 0, 100), datagram(1, 2, 100)]);
    }
}
