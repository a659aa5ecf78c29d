//! G.711 µ-law and A-law (ITU-T G.711), table driven and bit-compatible with Asterisk.
//!
//! The tables are the ones Asterisk builds in `ast_ulaw_init` / `ast_alaw_init` (the default,
//! non-`G711_NEW_ALGORITHM` build): encoding looks up a 14-bit index (`(u16)sample >> 2`) for
//! µ-law and a 13-bit index (`(u16)sample >> 3`) for A-law, decoding a 256-entry table. All
//! tables are computed at compile time by `const fn`s, so there is no initialisation step and
//! no lock on the hot path.

/// µ-law encoder bias (added to the magnitude before segment search).
const ULAW_BIAS: i32 = 0x84;
/// µ-law magnitude clip.
const ULAW_CLIP: i32 = 32635;
/// A-law even-bit inversion mask.
const ALAW_AMI_MASK: u8 = 0x55;

/// µ-law encoding of digital silence (0).
pub const ULAW_SILENCE: u8 = 0xFF;
/// A-law encoding of digital silence (0).
pub const ALAW_SILENCE: u8 = 0xD5;

/// Segment (exponent) lookup for the µ-law encoder: index is `(biased magnitude >> 7) & 0xFF`.
const fn ulaw_exp_lut(i: usize) -> i32 {
    // 0,0,1,1,2,2,2,2,3 x8,4 x16,5 x32,6 x64,7 x128
    if i < 2 {
        0
    } else if i < 4 {
        1
    } else if i < 8 {
        2
    } else if i < 16 {
        3
    } else if i < 32 {
        4
    } else if i < 64 {
        5
    } else if i < 128 {
        6
    } else {
        7
    }
}

/// Asterisk's `linear2ulaw` (no zero trap).
const fn linear2ulaw_exact(sample: i32) -> u8 {
    let mut s = sample;
    let sign = if s < 0 { 0x80 } else { 0 };
    if s < 0 {
        s = -s;
    }
    if s > ULAW_CLIP {
        s = ULAW_CLIP;
    }
    s += ULAW_BIAS;
    let exponent = ulaw_exp_lut(((s >> 7) & 0xFF) as usize);
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// Asterisk's `linear2alaw`.
const fn linear2alaw_exact(sample: i32) -> u8 {
    const SEG_END: [i32; 8] = [0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF];
    let mut pcm = sample;
    let mask: u8 = if pcm >= 0 {
        ALAW_AMI_MASK | 0x80
    } else {
        pcm = -pcm;
        ALAW_AMI_MASK
    };
    let mut seg = 0;
    while seg < 8 {
        if pcm <= SEG_END[seg] {
            break;
        }
        seg += 1;
    }
    let shift = if seg > 0 { seg + 3 } else { 4 };
    (((seg as i32) << 4) as u8 | ((pcm >> shift) & 0x0F) as u8) ^ mask
}

const fn build_ulaw_decode() -> [i16; 256] {
    const ETAB: [i32; 8] = [0, 132, 396, 924, 1980, 4092, 8316, 16764];
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        let mu = 255 - i as i32;
        let e = ((mu & 0x70) / 16) as usize;
        let f = mu & 0x0F;
        let mut y = f * (1 << (e + 3)) + ETAB[e];
        if mu & 0x80 != 0 {
            y = -y;
        }
        t[i] = y as i16;
        i += 1;
    }
    t
}

const fn build_alaw_decode() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut n = 0;
    while n < 256 {
        let a = (n as u8) ^ ALAW_AMI_MASK;
        let mut i = (((a & 0x0F) as i32) << 4) + 8;
        let seg = ((a & 0x70) >> 4) as i32;
        if seg != 0 {
            i = (i + 0x100) << (seg - 1);
        }
        t[n] = if a & 0x80 != 0 { i as i16 } else { -i as i16 };
        n += 1;
    }
    t
}

/// The µ-law encode table: Asterisk fills `table[(u16)i >> 2]` for every `i` in
/// `-32768..32768` in increasing order, so each bucket holds the code of its last member
/// (`index << 2 | 3` reinterpreted as i16).
const fn build_ulaw_encode() -> [u8; 16384] {
    let mut t = [0u8; 16384];
    let mut idx = 0;
    while idx < 16384 {
        let sample = ((idx << 2) | 3) as u16 as i16 as i32;
        t[idx] = linear2ulaw_exact(sample);
        idx += 1;
    }
    t
}

/// The A-law encode table, bucketed by `(u16)i >> 3` as Asterisk does.
const fn build_alaw_encode() -> [u8; 8192] {
    let mut t = [0u8; 8192];
    let mut idx = 0;
    while idx < 8192 {
        let sample = ((idx << 3) | 7) as u16 as i16 as i32;
        t[idx] = linear2alaw_exact(sample);
        idx += 1;
    }
    t
}

/// µ-law byte -> 16-bit linear (Asterisk `AST_MULAW`).
pub static ULAW_TO_LINEAR: [i16; 256] = build_ulaw_decode();
/// A-law byte -> 16-bit linear (Asterisk `AST_ALAW`).
pub static ALAW_TO_LINEAR: [i16; 256] = build_alaw_decode();
/// 16-bit linear >> 2 -> µ-law byte (Asterisk `__ast_lin2mu`).
pub static LINEAR_TO_ULAW: [u8; 16384] = build_ulaw_encode();
/// 16-bit linear >> 3 -> A-law byte (Asterisk `__ast_lin2a`).
pub static LINEAR_TO_ALAW: [u8; 8192] = build_alaw_encode();

/// Decode one µ-law byte.
#[inline]
pub fn ulaw_to_linear(u: u8) -> i16 {
    ULAW_TO_LINEAR[u as usize]
}

/// Encode one 16-bit linear sample to µ-law.
#[inline]
pub fn linear_to_ulaw(s: i16) -> u8 {
    LINEAR_TO_ULAW[(s as u16 >> 2) as usize]
}

/// Decode one A-law byte.
#[inline]
pub fn alaw_to_linear(a: u8) -> i16 {
    ALAW_TO_LINEAR[a as usize]
}

/// Encode one 16-bit linear sample to A-law.
#[inline]
pub fn linear_to_alaw(s: i16) -> u8 {
    LINEAR_TO_ALAW[(s as u16 >> 3) as usize]
}

/// Decode µ-law bytes into `dst`. Converts `min(src.len(), dst.len())` samples and returns
/// that count. Never allocates.
pub fn ulaw_to_linear_slice(src: &[u8], dst: &mut [i16]) -> usize {
    let n = src.len().min(dst.len());
    for (d, s) in dst[..n].iter_mut().zip(&src[..n]) {
        *d = ULAW_TO_LINEAR[*s as usize];
    }
    n
}

/// Encode linear samples into µ-law bytes in `dst`; returns the count converted.
pub fn linear_to_ulaw_slice(src: &[i16], dst: &mut [u8]) -> usize {
    let n = src.len().min(dst.len());
    for (d, s) in dst[..n].iter_mut().zip(&src[..n]) {
        *d = LINEAR_TO_ULAW[(*s as u16 >> 2) as usize];
    }
    n
}

/// Decode A-law bytes into `dst`; returns the count converted.
pub fn alaw_to_linear_slice(src: &[u8], dst: &mut [i16]) -> usize {
    let n = src.len().min(dst.len());
    for (d, s) in dst[..n].iter_mut().zip(&src[..n]) {
        *d = ALAW_TO_LINEAR[*s as usize];
    }
    n
}

/// Encode linear samples into A-law bytes in `dst`; returns the count converted.
pub fn linear_to_alaw_slice(src: &[i16], dst: &mut [u8]) -> usize {
    let n = src.len().min(dst.len());
    for (d, s) in dst[..n].iter_mut().zip(&src[..n]) {
        *d = LINEAR_TO_ALAW[(*s as u16 >> 3) as usize];
    }
    n
}

/// Decode little-endian slin bytes (`i16` LE pairs) into `dst`; returns samples converted.
/// A trailing odd byte is ignored.
pub fn slin_bytes_to_samples(src: &[u8], dst: &mut [i16]) -> usize {
    let n = (src.len() / 2).min(dst.len());
    for (d, c) in dst[..n].iter_mut().zip(src.chunks_exact(2)) {
        *d = i16::from_le_bytes([c[0], c[1]]);
    }
    n
}

/// Direct µ-law -> A-law transcoding (via linear, as Asterisk's `AST_LIN2A(AST_MULAW(x))`).
#[inline]
pub fn ulaw_to_alaw(u: u8) -> u8 {
    linear_to_alaw(ulaw_to_linear(u))
}

/// Direct A-law -> µ-law transcoding.
#[inline]
pub fn alaw_to_ulaw(a: u8) -> u8 {
    linear_to_ulaw(alaw_to_linear(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        // Full scale.
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        // Asterisk's digital milliwatt bytes decode to the expected sine points.
        assert_eq!(ulaw_to_linear(0x1E), -8828);
        assert_eq!(ulaw_to_linear(0x0B), -20860);
        assert_eq!(ulaw_to_linear(0x9E), 8828);
        assert_eq!(ulaw_to_linear(0x8B), 20860);
    }

    #[test]
    fn tables_match_direct_algorithm() {
        // A table bucket holds the code of its last member (as Asterisk's table does), so a
        // sample may differ from the direct algorithm only where a bucket straddles a code
        // boundary, and then only by one adjacent code. (-32768 overflows the direct A-law
        // segment search, in Asterisk's C too; its table bucket is fine.)
        for s in (i16::MIN + 1)..=i16::MAX {
            let (t, d) = (linear_to_ulaw(s), linear2ulaw_exact(s as i32));
            if t != d {
                assert_eq!((!t & 0x80), (!d & 0x80), "ulaw sign differs at {s}");
                assert_eq!(
                    ((!t & 0x7F) as i32 - (!d & 0x7F) as i32).abs(),
                    1,
                    "ulaw at {s}"
                );
            }
            let (t, d) = (linear_to_alaw(s) ^ 0x55, linear2alaw_exact(s as i32) ^ 0x55);
            if t != d {
                assert!(
                    s < 0,
                    "positive A-law buckets are aligned to segments ({s})"
                );
                assert_eq!(t & 0x80, d & 0x80, "alaw sign differs at {s}");
                assert_eq!(
                    ((t & 0x7F) as i32 - (d & 0x7F) as i32).abs(),
                    1,
                    "alaw at {s}"
                );
            }
        }
        // And at every bucket's last member the table is exact.
        for idx in 0..16384usize {
            let s = ((idx << 2) | 3) as u16 as i16;
            assert_eq!(linear_to_ulaw(s), linear2ulaw_exact(s as i32));
        }
    }

    fn ulaw_step(mag: i32) -> i32 {
        // quantisation step of the segment holding `mag` (biased)
        let e = ulaw_exp_lut((((mag.min(ULAW_CLIP)) + ULAW_BIAS) >> 7) as usize & 0xFF);
        1 << (e + 3)
    }

    #[test]
    fn ulaw_round_trip_error_bound() {
        for s in i16::MIN..=i16::MAX {
            let d = ulaw_to_linear(linear_to_ulaw(s)) as i32;
            let s = s as i32;
            let mag = s.abs().min(32767);
            if mag > ULAW_CLIP {
                // clipped region: decodes to the top code
                assert_eq!(d.abs(), 32124, "s={s}");
                continue;
            }
            let err = (d - s).abs();
            // half a step of rounding plus the 4-sample table bucket
            let bound = ulaw_step(mag) / 2 + 4;
            assert!(err <= bound, "s={s} d={d} err={err} bound={bound}");
            assert!(d.signum() * s.signum() >= 0, "sign flip s={s} d={d}");
        }
    }

    #[test]
    fn alaw_round_trip_error_bound() {
        for s in i16::MIN..=i16::MAX {
            let d = alaw_to_linear(linear_to_alaw(s)) as i32;
            let s = s as i32;
            let mag = s.abs();
            let seg = if mag <= 0xFF {
                0
            } else {
                32 - (mag as u32).leading_zeros() as i32 - 8
            };
            let step = if seg == 0 { 16 } else { 1 << (seg + 3) };
            let err = (d - s).abs();
            assert!(err <= step / 2 + 8, "s={s} d={d} err={err}");
        }
    }

    #[test]
    fn decode_encode_is_identity_on_codes() {
        // Every code (except µ-law negative zero 0x7F, which re-encodes as 0xFF) round-trips.
        for c in 0u8..=255 {
            let u = linear_to_ulaw(ulaw_to_linear(c));
            if c == 0x7F {
                assert_eq!(u, 0xFF);
            } else {
                assert_eq!(u, c, "ulaw code {c:#x}");
            }
            assert_eq!(linear_to_alaw(alaw_to_linear(c)), c, "alaw code {c:#x}");
        }
    }

    #[test]
    fn monotonic_decode() {
        // Positive µ-law codes 0xFF..0x80 decode to increasing values.
        let mut prev = -1;
        for c in (0x80u8..=0xFF).rev() {
            let v = ulaw_to_linear(c) as i32;
            assert!(v > prev, "code {c:#x}");
            prev = v;
        }
    }

    #[test]
    fn slices() {
        let src: Vec<i16> = (0..160).map(|i| (i * 200 - 16000) as i16).collect();
        let mut enc = [0u8; 160];
        let mut dec = [0i16; 160];
        assert_eq!(linear_to_ulaw_slice(&src, &mut enc), 160);
        assert_eq!(ulaw_to_linear_slice(&enc, &mut dec), 160);
        for (a, b) in src.iter().zip(dec.iter()) {
            assert!((*a as i32 - *b as i32).abs() < 600);
        }
        assert_eq!(linear_to_alaw_slice(&src, &mut enc), 160);
        assert_eq!(alaw_to_linear_slice(&enc, &mut dec), 160);
        for (a, b) in src.iter().zip(dec.iter()) {
            assert!((*a as i32 - *b as i32).abs() < 600);
        }
        // short destination: converts only what fits
        let mut small = [0u8; 10];
        assert_eq!(linear_to_ulaw_slice(&src, &mut small), 10);
        let mut s2 = [0i16; 3];
        assert_eq!(slin_bytes_to_samples(&[1, 0, 0xFF, 0xFF, 7], &mut s2), 2);
        assert_eq!(&s2[..2], &[1, -1]);
        assert_eq!(ulaw_to_alaw(0xFF), 0xD5);
        assert_eq!(alaw_to_linear(ulaw_to_alaw(0x80)), 32256);
        assert_eq!(ulaw_to_linear(alaw_to_ulaw(0xAA)), 32124);
    }
}
