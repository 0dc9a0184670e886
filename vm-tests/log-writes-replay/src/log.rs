//! The dm-log-writes log format, written from the kernel's description
//! (Documentation/admin-guide/device-mapper/log-writes.rst and the struct layout in
//! drivers/md/dm-log-writes.c):
//!
//! - byte 0: the super block, `magic: le64, version: le64, nr_entries: le64, sectorsize: le32`;
//! - from byte `sectorsize` on, `nr_entries` entries, each one `sectorsize` block holding the header
//!   `sector: le64, nr_sectors: le64, flags: le64, data_len: le64` (a mark's text follows the header in
//!   that same block), then, unless the entry is a discard, `nr_sectors` blocks of written data.
//!
//! `sector` and `nr_sectors` count blocks of `sectorsize` bytes (the logged device's logical block
//! size). Entries are in completion order, and a plain write is only logged once a later flush has
//! made it durable, so the disk after entries `0..n` is a state a power cut could have left.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

/// `WRITE_LOG_MAGIC`.
pub const MAGIC: u64 = 0x006a_7366_7773_6872;
/// The only version the kernel writes.
pub const VERSION: u64 = 1;
/// Size of an entry header (four le64).
pub const HEADER_LEN: usize = 32;
/// Size of the super block's fields.
pub const SUPER_LEN: usize = 28;

/// The request carried REQ_PREFLUSH.
pub const FLUSH: u64 = 1 << 0;
/// The request carried REQ_FUA.
pub const FUA: u64 = 1 << 1;
/// A discard: no data in the log.
pub const DISCARD: u64 = 1 << 2;
/// A mark inserted with `dmsetup message <dev> 0 mark <text>`.
pub const MARK: u64 = 1 << 3;
/// The request carried REQ_META.
pub const METADATA: u64 = 1 << 4;

/// What can be wrong with a log.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// Not a dm-log-writes log.
    BadMagic(u64),
    /// A version this reader does not know.
    BadVersion(u64),
    /// A block size the kernel never uses.
    BadSectorSize(u32),
    /// The log ends inside entry `index`.
    Truncated { index: u64, at: u64 },
    /// Entry `index` makes no sense (`why`).
    BadEntry { index: u64, why: &'static str },
    /// An I/O error (message).
    Io(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadMagic(m) => write!(f, "not a dm-log-writes log (magic {m:#x})"),
            Error::BadVersion(v) => write!(f, "unknown log version {v}"),
            Error::BadSectorSize(s) => write!(f, "impossible sector size {s}"),
            Error::Truncated { index, at } => {
                write!(f, "the log ends inside entry {index} (byte {at})")
            }
            Error::BadEntry { index, why } => write!(f, "entry {index}: {why}"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e.to_string())
    }
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The super block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Super {
    /// Entries the kernel had logged when it last wrote the super block.
    pub nr_entries: u64,
    /// Bytes per block, for entries and for `sector` units.
    pub sectorsize: u32,
}

/// Parses the super block from the log's first bytes.
pub fn parse_super(b: &[u8]) -> Result<Super, Error> {
    if b.len() < SUPER_LEN {
        return Err(Error::Truncated { index: 0, at: 0 });
    }
    let magic = le64(b, 0);
    if magic != MAGIC {
        return Err(Error::BadMagic(magic));
    }
    let version = le64(b, 8);
    if version != VERSION {
        return Err(Error::BadVersion(version));
    }
    let mut s = [0u8; 4];
    s.copy_from_slice(&b[24..28]);
    let sectorsize = u32::from_le_bytes(s);
    if !sectorsize.is_power_of_two() || !(512..=65536).contains(&sectorsize) {
        return Err(Error::BadSectorSize(sectorsize));
    }
    Ok(Super {
        nr_entries: le64(b, 16),
        sectorsize,
    })
}

/// One logged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, from 0.
    pub index: u64,
    /// First block written (in `sectorsize` units).
    pub sector: u64,
    /// Blocks written.
    pub nr_sectors: u64,
    /// `FLUSH | FUA | DISCARD | MARK | METADATA`.
    pub flags: u64,
    /// A mark's text.
    pub mark: Option<String>,
    /// Byte offset of the written data in the log.
    pub data_at: u64,
}

impl Entry {
    /// Whether the entry is a durability point: a flush or a FUA write.
    pub fn is_barrier(&self) -> bool {
        self.flags & (FLUSH | FUA) != 0
    }

    /// The flags as words, for people.
    pub fn flag_names(&self) -> String {
        let names = [
            (FLUSH, "flush"),
            (FUA, "fua"),
            (DISCARD, "discard"),
            (MARK, "mark"),
            (METADATA, "meta"),
        ];
        let v: Vec<&str> = names
            .iter()
            .filter(|(f, _)| self.flags & f != 0)
            .map(|(_, n)| *n)
            .collect();
        if v.is_empty() {
            "write".into()
        } else {
            v.join("+")
        }
    }
}

/// Parses entry `index` from its header block (`block.len() == sectorsize`).
pub fn parse_entry(block: &[u8], index: u64, data_at: u64) -> Result<Entry, Error> {
    if block.len() < HEADER_LEN {
        return Err(Error::BadEntry {
            index,
            why: "header block shorter than a header",
        });
    }
    let (sector, nr_sectors, flags, data_len) = (
        le64(block, 0),
        le64(block, 8),
        le64(block, 16),
        le64(block, 24),
    );
    if flags & !(FLUSH | FUA | DISCARD | MARK | METADATA) != 0 {
        return Err(Error::BadEntry {
            index,
            why: "unknown flags",
        });
    }
    let mark = if flags & MARK != 0 {
        let end = usize::try_from(data_len)
            .ok()
            .and_then(|l| l.checked_add(HEADER_LEN))
            .filter(|&e| e <= block.len())
            .ok_or(Error::BadEntry {
                index,
                why: "mark text longer than its block",
            })?;
        Some(String::from_utf8_lossy(&block[HEADER_LEN..end]).into_owned())
    } else {
        if data_len != 0 {
            // Inline data is only logged for DAX devices, which this tool never records.
            return Err(Error::BadEntry {
                index,
                why: "inline (DAX) data is not supported",
            });
        }
        None
    };
    Ok(Entry {
        index,
        sector,
        nr_sectors,
        flags,
        mark,
        data_at,
    })
}

/// A parsed log: its super block and every entry's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// The super block.
    pub sup: Super,
    /// The entries, in log order.
    pub entries: Vec<Entry>,
}

impl Log {
    /// Reads the headers of all `nr_entries` entries (the data stays in the log).
    pub fn read<R: Read + Seek>(r: &mut R) -> Result<Log, Error> {
        let mut head = [0u8; SUPER_LEN];
        r.seek(SeekFrom::Start(0))?;
        read_exact_or(r, &mut head, Error::Truncated { index: 0, at: 0 })?;
        let sup = parse_super(&head)?;
        let ss = u64::from(sup.sectorsize);
        let mut block = vec![0u8; sup.sectorsize as usize];
        let mut at = ss;
        let mut entries = Vec::new();
        for index in 0..sup.nr_entries {
            r.seek(SeekFrom::Start(at))?;
            read_exact_or(r, &mut block, Error::Truncated { index, at })?;
            let e = parse_entry(&block, index, at + ss)?;
            at += ss;
            if e.flags & DISCARD == 0 {
                let len = e.nr_sectors.checked_mul(ss).ok_or(Error::BadEntry {
                    index,
                    why: "length overflows",
                })?;
                at = at.checked_add(len).ok_or(Error::BadEntry {
                    index,
                    why: "length overflows",
                })?;
            }
            entries.push(e);
        }
        // The last entry's data must be there too.
        let end = r.seek(SeekFrom::End(0))?;
        if end < at {
            return Err(Error::Truncated {
                index: sup.nr_entries.saturating_sub(1),
                at: end,
            });
        }
        Ok(Log { sup, entries })
    }

    /// The number of entries up to and including the mark `text` (`None` when there is no such mark).
    pub fn after_mark(&self, text: &str) -> Option<u64> {
        self.entries
            .iter()
            .find(|e| e.mark.as_deref() == Some(text))
            .map(|e| e.index + 1)
    }

    /// Writes entries `from..to` onto `target`: data is copied from `log`, discards become zeros.
    pub fn replay(
        &self,
        log: &impl FileExt,
        target: &impl FileExt,
        from: u64,
        to: u64,
    ) -> Result<(), Error> {
        let ss = u64::from(self.sup.sectorsize);
        let to = to.min(self.entries.len() as u64);
        let mut buf = vec![0u8; 1 << 20];
        for e in self
            .entries
            .iter()
            .skip(from as usize)
            .take(to.saturating_sub(from) as usize)
        {
            let mut left = e.nr_sectors * ss;
            let mut dst = e.sector * ss;
            let mut src = e.data_at;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                if e.flags & DISCARD != 0 {
                    buf[..n].fill(0);
                } else {
                    log.read_exact_at(&mut buf[..n], src)?;
                }
                target.write_all_at(&buf[..n], dst)?;
                left -= n as u64;
                dst += n as u64;
                src += n as u64;
            }
        }
        Ok(())
    }
}

fn read_exact_or<R: Read>(r: &mut R, buf: &mut [u8], err: Error) -> Result<(), Error> {
    match r.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(err),
        Err(e) => Err(e.into()),
    }
}

/// Why a prefix was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Nothing replayed: the starting image.
    Start,
    /// Right after a flush or FUA entry.
    Barrier,
    /// Right after a random entry between barriers.
    Random,
    /// Everything replayed.
    End,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Start => "start",
            Kind::Barrier => "barrier",
            Kind::Random => "random",
            Kind::End => "end",
        })
    }
}

/// A prefix to check: the image after entries `0..n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// Entries replayed.
    pub n: u64,
    /// Why it was chosen.
    pub kind: Kind,
    /// The last mark within the prefix ("-" when none).
    pub after_mark: String,
}

/// splitmix64: a tiny deterministic generator, so a seed replays the same sample.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number below `n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The prefixes to check: the start, the end, every barrier (a seeded sample of `max_barriers` of them
/// when there are more) and `random` prefixes ending at other entries, in replay order.
pub fn points(log: &Log, seed: u64, max_barriers: usize, random: usize) -> Vec<Point> {
    let total = log.entries.len() as u64;
    let mut rng = Rng::new(seed);
    let mut barriers: Vec<u64> = log
        .entries
        .iter()
        .filter(|e| e.is_barrier())
        .map(|e| e.index + 1)
        .collect();
    while barriers.len() > max_barriers {
        let i = rng.below(barriers.len() as u64) as usize;
        barriers.remove(i);
    }
    let mut chosen: Vec<(u64, Kind)> = vec![(0, Kind::Start), (total, Kind::End)];
    chosen.extend(barriers.iter().map(|&n| (n, Kind::Barrier)));
    // Random cut points among the entries that are not barriers themselves.
    let others: Vec<u64> = log
        .entries
        .iter()
        .filter(|e| !e.is_barrier() && e.mark.is_none())
        .map(|e| e.index + 1)
        .collect();
    let mut picked = Vec::new();
    if random >= others.len() {
        // As many as there are: every one of them (an exhaustive run).
        picked = others;
    } else {
        for _ in 0..random {
            let n = others[rng.below(others.len() as u64) as usize];
            if !picked.contains(&n) {
                picked.push(n);
            }
        }
    }
    chosen.extend(picked.iter().map(|&n| (n, Kind::Random)));
    chosen.sort();
    chosen.dedup_by_key(|(n, _)| *n);
    chosen
        .into_iter()
        .map(|(n, kind)| Point {
            n,
            kind,
            after_mark: log.entries[..n as usize]
                .iter()
                .rev()
                .find_map(|e| e.mark.clone())
                .unwrap_or_else(|| "-".into()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Builds a log the way the kernel lays it out: (sector, nr_sectors, flags, mark, fill byte).
    fn build(
        ss: usize,
        entries: &[(u64, u64, u64, &str, u8)],
        nr_override: Option<u64>,
    ) -> Vec<u8> {
        let mut v = vec![0u8; ss];
        v[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        v[8..16].copy_from_slice(&VERSION.to_le_bytes());
        let nr = nr_override.unwrap_or(entries.len() as u64);
        v[16..24].copy_from_slice(&nr.to_le_bytes());
        v[24..28].copy_from_slice(&(ss as u32).to_le_bytes());
        for &(sector, nr, flags, mark, fill) in entries {
            let mut b = vec![0u8; ss];
            b[0..8].copy_from_slice(&sector.to_le_bytes());
            b[8..16].copy_from_slice(&nr.to_le_bytes());
            b[16..24].copy_from_slice(&flags.to_le_bytes());
            b[24..32].copy_from_slice(&(mark.len() as u64).to_le_bytes());
            b[32..32 + mark.len()].copy_from_slice(mark.as_bytes());
            v.extend_from_slice(&b);
            if flags & DISCARD == 0 {
                v.extend(std::iter::repeat_n(fill, nr as usize * ss));
            }
        }
        v
    }

    fn sample() -> Vec<u8> {
        build(
            512,
            &[
                (0, 0, MARK, "begin", 0),
                (2, 2, 0, "", 0xaa),
                (1, 1, METADATA, "", 0xbb),
                (0, 0, FLUSH, "", 0),
                (0, 1, FUA | METADATA, "", 0xcc),
                (2, 1, DISCARD, "", 0),
                (5, 1, 0, "", 0xdd),
                (0, 0, FLUSH, "", 0),
                (0, 0, MARK, "end", 0),
            ],
            None,
        )
    }

    #[test]
    fn reads_super_and_entries_with_their_data_offsets() {
        let log = Log::read(&mut Cursor::new(sample())).unwrap();
        assert_eq!(
            log.sup,
            Super {
                nr_entries: 9,
                sectorsize: 512
            }
        );
        let e = &log.entries;
        assert_eq!(e.len(), 9);
        assert_eq!(e[0].mark.as_deref(), Some("begin"));
        assert_eq!(
            (e[1].sector, e[1].nr_sectors, e[1].data_at),
            (2, 2, 3 * 512)
        );
        // entry 2's header follows entry 1's two data blocks
        assert_eq!(e[2].data_at, 6 * 512);
        assert_eq!(e[3].flag_names(), "flush");
        assert_eq!(e[4].flag_names(), "fua+meta");
        // a discard has no data blocks: the next header comes right after it
        assert_eq!(e[6].data_at, e[5].data_at + 512);
        assert_eq!(log.after_mark("end"), Some(9));
        assert_eq!(log.after_mark("nope"), None);
    }

    #[test]
    fn rejects_what_is_not_a_log() {
        let mut v = sample();
        v[0] ^= 1;
        assert!(matches!(
            Log::read(&mut Cursor::new(v)),
            Err(Error::BadMagic(_))
        ));
        let mut v = sample();
        v[8] = 2;
        assert_eq!(Log::read(&mut Cursor::new(v)), Err(Error::BadVersion(2)));
        let mut v = sample();
        v[24..28].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(
            Log::read(&mut Cursor::new(v)),
            Err(Error::BadSectorSize(1000))
        );
        assert!(matches!(
            Log::read(&mut Cursor::new(vec![0u8; 10])),
            Err(Error::Truncated { .. })
        ));
    }

    #[test]
    fn a_log_cut_short_or_with_too_many_entries_is_truncated() {
        let mut v = sample();
        v.truncate(v.len() - 512 - 10);
        assert!(matches!(
            Log::read(&mut Cursor::new(v)),
            Err(Error::Truncated { .. })
        ));
        let v = build(512, &[(0, 4, 0, "", 1)], Some(2));
        assert!(matches!(
            Log::read(&mut Cursor::new(v)),
            Err(Error::Truncated { index: 1, .. })
        ));
    }

    #[test]
    fn rejects_bad_entries() {
        let mut v = build(512, &[(0, 0, MARK, "x", 0)], None);
        v[512 + 24..512 + 32].copy_from_slice(&600u64.to_le_bytes());
        assert!(matches!(
            Log::read(&mut Cursor::new(v)),
            Err(Error::BadEntry { index: 0, .. })
        ));
        let v = build(512, &[(0, 0, 1 << 7, "", 0)], None);
        assert!(matches!(
            Log::read(&mut Cursor::new(v)),
            Err(Error::BadEntry { .. })
        ));
        let mut v = build(512, &[(0, 0, 0, "", 0)], None);
        v[512 + 24] = 8;
        assert!(matches!(
            Log::read(&mut Cursor::new(v)),
            Err(Error::BadEntry { .. })
        ));
    }

    #[test]
    fn a_4k_log_keeps_units_in_4k_blocks() {
        let v = build(4096, &[(3, 2, FLUSH, "", 7), (0, 0, MARK, "m", 0)], None);
        let log = Log::read(&mut Cursor::new(v)).unwrap();
        assert_eq!(log.entries[0].data_at, 2 * 4096);
        assert_eq!(log.entries[1].data_at, 5 * 4096);
    }

    fn temp(name: &str, bytes: &[u8]) -> (std::path::PathBuf, std::fs::File) {
        let p = std::env::temp_dir().join(format!("lwr-test-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        (p, f)
    }

    #[test]
    fn replays_prefixes_in_order_with_discards_as_zeros() {
        let bytes = sample();
        let log = Log::read(&mut Cursor::new(bytes.clone())).unwrap();
        let (lp, lf) = temp("log", &bytes);
        let (tp, tf) = temp("img", &[0x11u8; 8 * 512]);
        let block = |f: &std::fs::File, i: u64| {
            let mut b = [0u8; 512];
            f.read_exact_at(&mut b, i * 512).unwrap();
            b[0]
        };
        log.replay(&lf, &tf, 0, 2).unwrap();
        assert_eq!(
            [block(&tf, 1), block(&tf, 2), block(&tf, 3)],
            [0x11, 0xaa, 0xaa]
        );
        log.replay(&lf, &tf, 2, 5).unwrap();
        assert_eq!([block(&tf, 0), block(&tf, 1)], [0xcc, 0xbb]);
        log.replay(&lf, &tf, 5, 100).unwrap();
        assert_eq!(
            [block(&tf, 2), block(&tf, 3), block(&tf, 5)],
            [0, 0xaa, 0xdd]
        );
        let _ = std::fs::remove_file(lp);
        let _ = std::fs::remove_file(tp);
    }

    #[test]
    fn points_cover_every_barrier_start_and_end_and_are_seeded() {
        let log = Log::read(&mut Cursor::new(sample())).unwrap();
        let p = points(&log, 1, 100, 0);
        let ns: Vec<u64> = p.iter().map(|p| p.n).collect();
        assert_eq!(ns, [0, 4, 5, 8, 9]);
        assert_eq!(p[0].kind, Kind::Start);
        assert_eq!(p[0].after_mark, "-");
        assert_eq!(p[1].after_mark, "begin");
        assert_eq!(p[4].kind, Kind::End);
        assert_eq!(p[4].after_mark, "end");
        let a = points(&log, 7, 1, 3);
        assert_eq!(a, points(&log, 7, 1, 3));
        assert_eq!(a.iter().filter(|p| p.kind == Kind::Barrier).count(), 1);
        assert!(a.iter().filter(|p| p.kind == Kind::Random).count() >= 1);
        for p in &a {
            if p.kind == Kind::Random {
                assert!(!log.entries[p.n as usize - 1].is_barrier());
            }
        }
        // Asking for at least as many as there are checks every prefix but the one ending at a mark.
        let all: Vec<u64> = points(&log, 3, 100, 100).iter().map(|p| p.n).collect();
        assert_eq!(all, [0, 2, 3, 4, 5, 6, 7, 8, 9]);
    }
}
