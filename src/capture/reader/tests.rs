use super::*;

fn pcap_header(magic: u32, big_endian: bool, linktype: u32) -> Vec<u8> {
    let mut v = Vec::new();
    let put32 = |v: &mut Vec<u8>, x: u32| {
        v.extend_from_slice(&if big_endian {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        })
    };
    put32(&mut v, magic);
    let (maj, min) = (2u16, 4u16);
    if big_endian {
        v.extend_from_slice(&maj.to_be_bytes());
        v.extend_from_slice(&min.to_be_bytes());
    } else {
        v.extend_from_slice(&maj.to_le_bytes());
        v.extend_from_slice(&min.to_le_bytes());
    }
    put32(&mut v, 0);
    put32(&mut v, 0);
    put32(&mut v, 65535);
    put32(&mut v, linktype);
    v
}

fn pcap_record(v: &mut Vec<u8>, big_endian: bool, sec: u32, frac: u32, data: &[u8]) {
    for x in [sec, frac, data.len() as u32, data.len() as u32 + 4] {
        v.extend_from_slice(&if big_endian {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        });
    }
    v.extend_from_slice(data);
}

/// (number, ts_ns, linktype, data, orig_len) of one frame.
type Row = (u64, i64, u32, Vec<u8>, u32);

fn read_all(bytes: &[u8]) -> (Vec<Row>, Option<CaptureError>) {
    collect(CaptureReader::new(bytes).unwrap())
}

fn collect<R: Read>(mut r: CaptureReader<R>) -> (Vec<Row>, Option<CaptureError>) {
    let mut frames = Vec::new();
    while let Some(f) = r.next_frame() {
        match f {
            Ok(f) => frames.push((f.number, f.ts_ns, f.linktype, f.data.to_vec(), f.orig_len)),
            Err(e) => return (frames, Some(e)),
        }
    }
    (frames, None)
}

#[test]
fn pcap_all_four_magics() {
    for (magic, be, nanos) in [
        (0xA1B2_C3D4u32, false, false),
        (0xA1B2_C3D4, true, false),
        (0xA1B2_3C4D, false, true),
        (0xA1B2_3C4D, true, true),
    ] {
        let mut v = pcap_header(magic, be, 0x0400_0001); // FCS bits must be masked off
        pcap_record(&mut v, be, 1_700_000_000, 123_456, b"abc");
        pcap_record(&mut v, be, 1_700_000_001, 999_999, b"");
        let r = CaptureReader::new(&v[..]).unwrap();
        assert_eq!(
            r.format(),
            CaptureFormat::Pcap {
                linktype: 1,
                nanosecond: nanos,
                big_endian: be
            }
        );
        let (frames, err) = read_all(&v);
        assert!(err.is_none());
        let mult = if nanos { 1 } else { 1000 };
        assert_eq!(
            frames,
            vec![
                (
                    1,
                    1_700_000_000_000_000_000 + 123_456 * mult,
                    1,
                    b"abc".to_vec(),
                    7
                ),
                (2, 1_700_000_001_000_000_000 + 999_999 * mult, 1, vec![], 4),
            ]
        );
    }
}

/// A source that hands out one byte per read, to exercise buffer refills.
struct Trickle<'a>(&'a [u8]);
impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() || buf.is_empty() {
            return Ok(0);
        }
        buf[0] = self.0[0];
        self.0 = &self.0[1..];
        Ok(1)
    }
}

#[test]
fn records_larger_than_the_buffer_and_tiny_reads() {
    let mut v = pcap_header(0xA1B2_C3D4, false, 1);
    // A snaplen above the buffer size allows such records.
    v[16..20].copy_from_slice(&(1u32 << 20).to_le_bytes());
    let big: Vec<u8> = (0..INITIAL_BUF + 1000).map(|i| i as u8).collect();
    pcap_record(&mut v, false, 1, 0, &big);
    pcap_record(&mut v, false, 2, 0, b"tail");
    let (frames, err) = read_all(&v);
    assert!(err.is_none());
    assert_eq!(frames[0].3, big);
    assert_eq!(frames[1].3, b"tail");

    let mut r = CaptureReader::new(Trickle(&v)).unwrap();
    assert_eq!(r.next_frame().unwrap().unwrap().data, &big[..]);
    assert_eq!(r.next_frame().unwrap().unwrap().data, b"tail");
    assert!(r.next_frame().is_none());
}

#[test]
fn header_errors() {
    let e = CaptureReader::new(&b""[..]).err().unwrap();
    assert!(matches!(
        e.kind,
        CaptureErrorKind::Truncated {
            needed: 4,
            available: 0
        }
    ));
    let e = CaptureReader::new(&b"GET / HTTP/1.1"[..]).err().unwrap();
    assert_eq!(
        e.to_string(),
        "not a pcap or pcapng file: magic 47 45 54 20 at byte offset 0"
    );
    let v = pcap_header(0xA1B2_C3D4, false, 1);
    let e = CaptureReader::new(&v[..20]).err().unwrap();
    assert_eq!(
        e.to_string(),
        "capture truncated in the file header (byte offset 0): the record needs 24 bytes but the file ends after 20"
    );
}

#[test]
fn oversized_record_is_corrupt() {
    let mut v = pcap_header(0xA1B2_C3D4, false, 1);
    pcap_record(&mut v, false, 1, 0, b"ok");
    let at = v.len() as u64;
    v.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0x7F, 0, 0, 0, 0]);
    let (frames, err) = read_all(&v);
    assert_eq!(frames.len(), 1);
    let err = err.unwrap();
    assert_eq!((err.packet, err.offset), (2, at));
    assert!(err.to_string().contains("exceeds the maximum"), "{err}");
}

#[test]
fn tsresol_scales() {
    assert_eq!(TsScale::from_tsresol(6).to_ns(1_500_000), 1_500_000_000);
    assert_eq!(TsScale::from_tsresol(9).to_ns(7), 7);
    assert_eq!(TsScale::from_tsresol(12).to_ns(7_000), 7);
    assert_eq!(TsScale::from_tsresol(0x80 | 10).to_ns(1024), 1_000_000_000);
    assert_eq!(TsScale::from_tsresol(0xFF).to_ns(u64::MAX), 0);
    assert_eq!(TsScale::from_tsresol(100).to_ns(u64::MAX), 0);
}

/// Minimal big-endian pcapng: SHB, IDB (µs default), a name-resolution block to skip,
/// an EPB and an SPB.
#[test]
fn pcapng_big_endian_with_skipped_blocks() {
    fn block(v: &mut Vec<u8>, ty: u32, body: &[u8]) {
        let len = 12 + body.len().div_ceil(4) * 4;
        v.extend_from_slice(&ty.to_be_bytes());
        v.extend_from_slice(&(len as u32).to_be_bytes());
        v.extend_from_slice(body);
        v.resize(v.len() + (len - 12 - body.len()), 0);
        v.extend_from_slice(&(len as u32).to_be_bytes());
    }
    let mut v = Vec::new();
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1A2B_3C4Du32.to_be_bytes());
    shb.extend_from_slice(&[0, 1, 0, 0]);
    shb.extend_from_slice(&(-1i64).to_be_bytes());
    block(&mut v, PCAPNG_SHB, &shb);
    block(&mut v, PCAPNG_IDB, &[0, 101, 0, 0, 0, 0, 0, 100]);
    block(&mut v, 4, &[0, 0, 0, 0]);
    let mut epb = Vec::new();
    for x in [0u32, 0, 1_000_001, 3, 3] {
        epb.extend_from_slice(&x.to_be_bytes());
    }
    epb.extend_from_slice(b"xyz");
    block(&mut v, PCAPNG_EPB, &epb);
    let mut spb = 200u32.to_be_bytes().to_vec();
    spb.extend_from_slice(&[9; 120]);
    block(&mut v, PCAPNG_SPB, &spb);
    let (frames, err) = read_all(&v);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        frames,
        vec![
            (1, 1_000_001_000, 101, b"xyz".to_vec(), 3),
            (2, 0, 101, vec![9; 100], 200),
        ]
    );
}

#[test]
fn pcapng_unknown_interface_is_an_error() {
    let mut v = Vec::new();
    for x in [
        PCAPNG_SHB,
        28,
        0x1A2B_3C4D,
        0x0001_0000,
        0xFFFF_FFFF,
        0xFFFF_FFFF,
        28,
    ] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    let at = v.len() as u64;
    for x in [PCAPNG_EPB, 32, 5, 0, 0, 0, 0, 32] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    let (frames, err) = read_all(&v);
    assert!(frames.is_empty());
    let err = err.unwrap();
    assert_eq!((err.packet, err.offset), (1, at));
    assert!(err.to_string().contains("interface 5"), "{err}");
}

#[test]
fn never_panics_on_mutations() {
    // Every single-byte corruption and every truncation of a small valid file.
    let mut v = pcap_header(0xA1B2_C3D4, false, 1);
    pcap_record(&mut v, false, 1, 2, b"hello world");
    pcap_record(&mut v, false, 3, 4, b"!");
    for cut in 0..v.len() {
        if let Ok(mut r) = CaptureReader::new(&v[..cut]) {
            while let Some(Ok(_)) = r.next_frame() {}
        }
    }
    for i in 0..v.len() {
        for b in [0x00, 0xFF, 0x80] {
            let mut w = v.clone();
            w[i] = b;
            if let Ok(mut r) = CaptureReader::new(&w[..]) {
                while let Some(Ok(_)) = r.next_frame() {}
            }
        }
    }
}

fn read_mapped(path: &std::path::Path) -> (Vec<Row>, Option<CaptureError>) {
    let f = std::fs::File::open(path).unwrap();
    collect(CaptureReader::<io::Empty>::mapped(&f).unwrap())
}

#[test]
fn mapped_file_reads_like_the_stream() {
    // Over 2 release steps of records, then the same file cut inside a record.
    let mut v = pcap_header(0xA1B2_3C4D, false, 1);
    let mut i = 0u32;
    while v.len() < 2 * RELEASE_STEP + 100_000 {
        let data: Vec<u8> = (0..(i % 1500)).map(|k| (k ^ i) as u8).collect();
        pcap_record(&mut v, false, i, i % 1_000_000_000, &data);
        i += 1;
    }
    let dir = std::env::temp_dir().join(format!("dissonance-map-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let whole = dir.join("whole.pcap");
    std::fs::write(&whole, &v).unwrap();
    let (frames, err) = read_mapped(&whole);
    assert!(err.is_none());
    assert_eq!(frames.len(), i as usize);
    assert_eq!((frames, err.map(|e| e.to_string())), {
        let (f, e) = read_all(&v);
        (f, e.map(|e| e.to_string()))
    });
    let cut = dir.join("cut.pcap");
    std::fs::write(&cut, &v[..v.len() - 7]).unwrap();
    let (frames, err) = read_mapped(&cut);
    let (want, want_err) = read_all(&v[..v.len() - 7]);
    assert_eq!(frames.len(), i as usize - 1);
    assert_eq!(frames, want);
    let (err, want_err) = (err.unwrap(), want_err.unwrap());
    assert_eq!((err.packet, err.offset), (want_err.packet, want_err.offset));
    assert_eq!(err.to_string(), want_err.to_string());
    std::fs::remove_dir_all(&dir).unwrap();
}
