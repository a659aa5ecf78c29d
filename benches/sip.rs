//! SIP parsing: a typical INVITE with an SDP body (what every incoming call costs),
//! plus its serialization, the SDP parse and the answer.
//! Run with `cargo bench --bench sip`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use voxpbx::sip::sdp::{answer, Codec, Direction, Sdp};
use voxpbx::sip::{parse_message, SipMessage};

const SDP: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\n\
s=-\r\n\
c=IN IP4 192.0.2.101\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 9 8 0 101\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

fn invite() -> Vec<u8> {
    format!(
        "INVITE sip:200@pbx.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.101:5060;rport;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:100@pbx.example.com>;tag=1928301774\r\n\
To: <sip:200@pbx.example.com>\r\n\
Call-ID: a84b4c76e66710@192.0.2.101\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:100@192.0.2.101:5060;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY\r\n\
Supported: replaces, timer\r\n\
User-Agent: Example Phone 1.0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let raw = invite();
    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.bench_function("parse_invite_with_sdp", |b| {
        b.iter(|| parse_message(black_box(&raw)).unwrap())
    });
    let msg = parse_message(&raw).unwrap();
    g.bench_function("encode_invite_with_sdp", |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            out.clear();
            black_box(&msg).encode(&mut out);
        })
    });
    let SipMessage::Request(req) = msg else {
        unreachable!()
    };
    g.bench_function("parse_sdp", |b| {
        b.iter(|| Sdp::parse(black_box(&req.body)).unwrap())
    });
    let offer = Sdp::parse(&req.body).unwrap();
    let local = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    g.bench_function("sdp_answer", |b| {
        b.iter(|| {
            answer(
                black_box(&offer),
                &[Codec::Pcmu, Codec::Pcma],
                local,
                20000,
                Direction::SendRecv,
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
