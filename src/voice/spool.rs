//! A track's talk spurts on disk until its sidecar is written: fixed-size records in an
//! unlinked file next to the WAV, those of one speaker chained in order, merged by start
//! at the end. Memory: a small buffer plus two offsets per speaker, whatever the number of
//! spurts (a 2 GB capture has millions).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustc_hash::FxHashMap;

use super::report::{FrameStats, SpurtReport};
use super::stream::EndReason;

const ENDS: [EndReason; 8] = [
    EndReason::Closing,
    EndReason::SessionChange,
    EndReason::ChannelReset,
    EndReason::NoChannel,
    EndReason::Idle,
    EndReason::SeqJump,
    EndReason::Rejoin,
    EndReason::EndOfCapture,
];

/// u64 fields of a record: the next record of the same speaker (0: none), then the spurt.
const FIELDS: usize = 27;
const RECORD: u64 = FIELDS as u64 * 8;
/// Records written out at a time.
const BUFFER: usize = 512 * FIELDS * 8;

pub(crate) struct Spool {
    file: File,
    /// Records not yet written, starting at file offset `flushed`.
    buf: Vec<u8>,
    flushed: u64,
    /// Per speaker: offsets of its first and last record.
    chains: FxHashMap<usize, (u64, u64)>,
}

impl Spool {
    /// A spool at `path`, removed from the directory at once: nothing is left behind
    /// whatever happens to the run.
    pub fn create(path: &Path) -> std::io::Result<Spool> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        std::fs::remove_file(path)?;
        Ok(Spool {
            file,
            buf: Vec::with_capacity(BUFFER),
            // Offset 0 means "no next record": the file starts with a record-sized gap.
            flushed: RECORD,
            chains: FxHashMap::default(),
        })
    }

    pub fn push(&mut self, s: &SpurtReport) -> std::io::Result<()> {
        let at = self.flushed + self.buf.len() as u64;
        if let Some((_, last)) = self.chains.get(&s.speaker).copied() {
            self.set_next(last, at)?;
        }
        self.chains
            .entry(s.speaker)
            .and_modify(|c| c.1 = at)
            .or_insert((at, at));
        for v in encode(s) {
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
        if self.buf.len() >= BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    fn set_next(&mut self, record: u64, next: u64) -> std::io::Result<()> {
        let bytes = next.to_le_bytes();
        if record >= self.flushed {
            let i = (record - self.flushed) as usize;
            self.buf[i..i + 8].copy_from_slice(&bytes);
            Ok(())
        } else {
            self.file.write_all_at(&bytes, record)
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.write_all_at(&self.buf, self.flushed)?;
        self.flushed += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Every spurt by start (at the same start, by speaker), as the sidecar lists them.
    pub fn sorted(
        &mut self,
        mut f: impl FnMut(&SpurtReport) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        self.flush()?;
        let mut heap = BinaryHeap::new();
        let mut raw = [0u8; RECORD as usize];
        let mut read = |at: u64| -> std::io::Result<(u64, SpurtReport)> {
            self.file.read_exact_at(&mut raw, at)?;
            let mut v = [0u64; FIELDS];
            for (x, b) in v.iter_mut().zip(raw.chunks_exact(8)) {
                *x = u64::from_le_bytes(b.try_into().expect("8 bytes"));
            }
            Ok((v[0], decode(&v)))
        };
        for &(first, _) in self.chains.values() {
            let (next, s) = read(first)?;
            // Starts are non-negative: their bit patterns order as the numbers do.
            heap.push(Reverse((s.start_s.to_bits(), s.speaker, first, next)));
        }
        while let Some(Reverse((_, _, at, next))) = heap.pop() {
            let (_, s) = read(at)?;
            f(&s)?;
            if next != 0 {
                let (after, n) = read(next)?;
                heap.push(Reverse((n.start_s.to_bits(), n.speaker, next, after)));
            }
        }
        Ok(())
    }
}

fn encode(s: &SpurtReport) -> [u64; FIELDS] {
    let t = &s.stats;
    let end = ENDS.iter().position(|e| e.name() == s.end).unwrap_or(7) as u64;
    [
        0,
        s.speaker as u64,
        s.session as u64,
        s.speaker_id as u64,
        s.start_s.to_bits(),
        s.end_s.to_bits(),
        s.wav_start_s.to_bits(),
        s.wav_end_s.to_bits(),
        s.first_seq as u64,
        s.last_seq as u64,
        s.first_packet,
        s.frames,
        t.packets,
        t.duplicates,
        t.decoded,
        t.lost,
        t.recovered_fec,
        t.concealed_plc,
        t.silenced,
        t.corrupt,
        t.late,
        t.reordered,
        t.discarded,
        t.spurts,
        t.outliers,
        end,
        s.ts_ns as u64,
    ]
}

fn decode(v: &[u64; FIELDS]) -> SpurtReport {
    SpurtReport {
        speaker: v[1] as usize,
        session: v[2] as u32,
        speaker_id: v[3] as u16,
        start_s: f64::from_bits(v[4]),
        end_s: f64::from_bits(v[5]),
        wav_start_s: f64::from_bits(v[6]),
        wav_end_s: f64::from_bits(v[7]),
        first_seq: v[8] as u16,
        last_seq: v[9] as u16,
        first_packet: v[10],
        frames: v[11],
        stats: FrameStats {
            packets: v[12],
            duplicates: v[13],
            decoded: v[14],
            lost: v[15],
            recovered_fec: v[16],
            concealed_plc: v[17],
            silenced: v[18],
            corrupt: v[19],
            late: v[20],
            reordered: v[21],
            discarded: v[22],
            spurts: v[23],
            outliers: v[24],
        },
        end: ENDS[(v[25] as usize).min(7)].name(),
        ts_ns: v[26] as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spurt(speaker: usize, start: f64, frames: u64) -> SpurtReport {
        SpurtReport {
            session: 7,
            speaker_id: speaker as u16,
            speaker,
            ts_ns: 1_700_000_000_000_000_000 + (start * 1e9) as i64,
            start_s: start,
            end_s: start + 0.5,
            wav_start_s: start,
            wav_end_s: start + 0.5,
            first_seq: 65535,
            last_seq: 3,
            first_packet: 42,
            frames,
            stats: FrameStats {
                decoded: frames,
                outliers: 9,
                ..FrameStats::default()
            },
            end: "seq_jump",
        }
    }

    /// Spurts come back by start (speaker order at the same start) whatever order they
    /// were placed in, across buffer flushes, field for field.
    #[test]
    fn spurts_come_back_sorted_and_whole() {
        let dir = std::env::temp_dir().join(format!("dissonance-spool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut spool = Spool::create(&dir.join("x.spurts.tmp")).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let mut want = Vec::new();
        // Speaker 0 talks long (placed late); 1 and 2 talk in turns meanwhile.
        for k in 0..3000u64 {
            let s = spurt(1 + (k % 2) as usize, 1.0 + k as f64, k);
            spool.push(&s).unwrap();
            want.push(s);
        }
        let long = spurt(0, 1.0, 5);
        spool.push(&long).unwrap();
        want.push(long);
        want.sort_by(|a, b| {
            a.start_s
                .total_cmp(&b.start_s)
                .then(a.speaker.cmp(&b.speaker))
        });
        let mut got = Vec::new();
        spool
            .sorted(|s| {
                got.push(s.clone());
                Ok(())
            })
            .unwrap();
        assert_eq!(got, want);
        std::fs::remove_dir_all(&dir).ok();
    }
}
