//! RTP core benchmarks: jitter buffer put/get per packet, RTP parse/serialize, session send.
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use voxpbx::media::{Format, Frame};
use voxpbx::rtp::{JitterBuffer, JitterConfig, RtpConfig, RtpHeader, RtpPacket, RtpSession};

fn rtp_packet(seq: u16) -> RtpPacket {
    RtpPacket {
        header: RtpHeader {
            marker: false,
            payload_type: 0,
            sequence: seq,
            timestamp: seq as u32 * 160,
            ssrc: 0x1234_5678,
            ..Default::default()
        },
        payload: Bytes::from(vec![0xffu8; 160]),
        padding: 0,
    }
}

fn bench_packet(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtp_packet");
    g.throughput(Throughput::Elements(1));
    let wire = Bytes::from(rtp_packet(1).to_vec().unwrap());
    g.bench_function("parse", |b| {
        b.iter(|| RtpPacket::parse(black_box(wire.clone())).unwrap())
    });
    let pkt = rtp_packet(1);
    let mut buf = Vec::with_capacity(512);
    g.bench_function("serialize_into", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&pkt).write(&mut buf).unwrap();
            black_box(buf.len())
        })
    });
    g.bench_function("serialize_to_vec", |b| {
        b.iter(|| black_box(&pkt).to_vec().unwrap())
    });
    g.finish();
}

fn bench_jitter(c: &mut Criterion) {
    let mut g = c.benchmark_group("jitter_buffer");
    g.throughput(Throughput::Elements(1));
    let payload = Bytes::from(vec![0xffu8; 160]);
    // One put + one get per packet, steady stream with a little reordering, on a fake clock.
    g.bench_function("put_get_per_packet", |b| {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut n: u64 = 0;
        b.iter(|| {
            // Swap every 7th pair to exercise reordering.
            let i = match n % 7 {
                0 => n + 1,
                1 => n - 1,
                _ => n,
            };
            let seq = i as u16;
            let frame = Frame {
                format: Format::Ulaw,
                data: payload.clone(),
                ts: (i as u32).wrapping_mul(160),
                seq,
            };
            let now = t0 + Duration::from_millis(n * 20);
            jb.put(now, 1, frame);
            black_box(jb.get(now + Duration::from_millis(5)));
            n += 1;
        })
    });
    g.finish();
}

fn bench_session(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtp_session");
    g.throughput(Throughput::Elements(1));
    let remote: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let frame = Frame::new(Format::Ulaw, Bytes::from(vec![0xffu8; 160]));
    g.bench_function("send_frame", |b| {
        let t0 = Instant::now();
        let cfg = RtpConfig {
            remote: Some(remote),
            ..RtpConfig::default()
        };
        let mut s = RtpSession::new(cfg, t0, SystemTime::now());
        let mut n: u64 = 0;
        b.iter(|| {
            n += 1;
            black_box(s.send_frame(t0 + Duration::from_millis(n * 20), &frame))
        })
    });
    g.bench_function("handle_receive_poll_frame", |b| {
        let t0 = Instant::now();
        let cfg = RtpConfig {
            remote: Some(remote),
            ..RtpConfig::default()
        };
        let mut s = RtpSession::new(cfg, t0, SystemTime::now());
        let wires: Vec<Bytes> = (0..1024u16)
            .map(|i| Bytes::from(rtp_packet(i).to_vec().unwrap()))
            .collect();
        let mut n: u64 = 0;
        b.iter(|| {
            let now = t0 + Duration::from_millis(n * 20);
            // Sequence numbers wrap every 1024 packets: a jump the session resyncs on, rarely.
            s.handle_receive(now, remote, wires[(n % 1024) as usize].clone())
                .unwrap();
            black_box(s.poll_frame(now + Duration::from_millis(5)));
            n += 1;
        })
    });
    g.finish();
}

criterion_group!(benches, bench_packet, bench_jitter, bench_session);
criterion_main!(benches);
