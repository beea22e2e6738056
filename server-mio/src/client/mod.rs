//! The client side of WHIP and WHEP, used by the server's edge pulls and by the tools alike:
//! the HTTP/1.1 client, URLs, the SDP candidate lines a client connects to, RFC 4571 framing
//! for ICE over TCP (the server's passive side frames with it too) and the UDP or ICE-TCP link
//! a client's str0m peer sends through. Neither the server nor the tools import the other for
//! these.

pub mod framing;
pub mod http;
pub mod link;
pub mod sdp;
pub mod tls;
pub mod url;
