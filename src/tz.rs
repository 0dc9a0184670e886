//! IANA time zones for retention's days, weeks and months, read from the system's zoneinfo database
//! (TZif files, RFC 8536) instead of a compiled-in copy: the copy was about 2 MB of the static binary.
//!
//! `UTC` needs no database. Any other name is looked up in `$TZDIR`, then the usual zoneinfo
//! directories. A name the database lacks is an error, as before. Where no database exists at all (the
//! initrd, which reads the configuration but never buckets by calendar), the name is accepted as
//! written and bucketing falls back to UTC with a warning, so a boot never fails over a time zone.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use ::tz::timezone::TransitionRule;
use chrono::{FixedOffset, MappedLocalTime, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone};

/// Where zoneinfo databases live, after `$TZDIR` (Debian, older layouts, NixOS).
const ZONEINFO_DIRS: &[&str] = &[
    "/usr/share/zoneinfo",
    "/usr/lib/zoneinfo",
    "/usr/share/lib/zoneinfo",
    "/etc/zoneinfo",
];

/// TZif files are a few kB; anything far larger is not one.
const MAX_TZIF: u64 = 1 << 20;

/// A time zone: `UTC` or an IANA zone loaded once per process and kept for its lifetime.
#[derive(Clone, Copy)]
pub struct Tz(&'static Zone);

struct Zone {
    name: &'static str,
    offsets: OffsetSource,
}

/// Where a zone's UTC offsets come from.
#[derive(Clone, Copy)]
enum OffsetSource {
    Utc,
    /// No zoneinfo database on this system: taken as UTC when used (with a warning).
    Unresolved,
    /// A zone from the database, parsed by `tz-rs`.
    Rules(&'static ::tz::TimeZone),
}

/// The reason a time zone name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownTz(pub String);

impl fmt::Display for UnknownTz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UnknownTz {}

static LOADED: Mutex<Vec<Tz>> = Mutex::new(Vec::new());
static WARNED: AtomicBool = AtomicBool::new(false);

impl Tz {
    /// Coordinated Universal Time, the default.
    pub const UTC: Tz = Tz(&Zone {
        name: "UTC",
        offsets: OffsetSource::Utc,
    });

    /// The name as configured.
    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// Resolves `name` against the first of `dirs` that exists.
    fn resolve(name: &str, dirs: &[PathBuf]) -> Result<Tz, UnknownTz> {
        if name == "UTC" {
            return Ok(Tz::UTC);
        }
        let unknown = || UnknownTz(format!("unknown time zone '{name}'"));
        let valid = !name.is_empty()
            && name.split('/').all(|c| {
                !c.is_empty()
                    && c != "."
                    && c != ".."
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b))
            });
        if !valid {
            return Err(unknown());
        }
        let mut cache = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tz) = cache.iter().find(|t| t.0.name == name) {
            return Ok(*tz);
        }
        let offsets = match dirs.iter().find(|d| d.is_dir()) {
            Some(dir) => OffsetSource::Rules(load(&dir.join(name)).ok_or_else(unknown)?),
            None => OffsetSource::Unresolved,
        };
        let tz = Tz(Box::leak(Box::new(Zone {
            name: Box::leak(name.to_owned().into_boxed_str()),
            offsets,
        })));
        cache.push(tz);
        Ok(tz)
    }

    /// The UTC offset (seconds east) in effect at the Unix time `t`.
    pub fn offset_at(self, t: i64) -> i32 {
        match self.0.offsets {
            OffsetSource::Utc => 0,
            OffsetSource::Unresolved => {
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "time zone '{}': no zoneinfo database on this system ($TZDIR, /usr/share/zoneinfo): days, weeks and months are taken in UTC",
                        self.0.name
                    );
                }
                0
            }
            OffsetSource::Rules(zone) => zone_offset(zone, t),
        }
    }
}

/// The UTC offset of `zone` at `t`. A version 1 file has no footer rule for the instants after its last
/// transition (tz-rs refuses those): the last transition's offset stays in effect, as zdump shows it.
fn zone_offset(zone: &::tz::TimeZone, t: i64) -> i32 {
    if let Ok(local) = zone.find_local_time_type(t) {
        return local.ut_offset();
    }
    let z = zone.as_ref();
    let index = z
        .transitions()
        .last()
        .map_or(0, |tr| tr.local_time_type_index());
    z.local_time_types().get(index).map_or(0, |l| l.ut_offset())
}

/// The zoneinfo directories to search: `$TZDIR` first.
fn zoneinfo_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("TZDIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    dirs.extend(ZONEINFO_DIRS.iter().map(PathBuf::from));
    dirs
}

impl FromStr for Tz {
    type Err = UnknownTz;
    fn from_str(s: &str) -> Result<Tz, UnknownTz> {
        Tz::resolve(s, &zoneinfo_dirs())
    }
}

impl PartialEq for Tz {
    fn eq(&self, other: &Tz) -> bool {
        self.0.name == other.0.name
    }
}

impl fmt::Debug for Tz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

impl fmt::Display for Tz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

impl serde::Serialize for Tz {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name)
    }
}

impl<'de> serde::Deserialize<'de> for Tz {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Tz, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// The offset of a [`Tz`] at one instant (chrono's view of it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TzOffset {
    tz: Tz,
    fixed: FixedOffset,
}

impl Offset for TzOffset {
    fn fix(&self) -> FixedOffset {
        self.fixed
    }
}

impl fmt::Display for TzOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.fixed, f)
    }
}

impl Tz {
    fn offset(self, secs: i32) -> TzOffset {
        TzOffset {
            tz: self,
            // Offsets are checked to lie within ±24 h, FixedOffset's range, when loaded.
            fixed: FixedOffset::east_opt(secs).unwrap_or(chrono::Utc.fix()),
        }
    }
}

impl TimeZone for Tz {
    type Offset = TzOffset;

    fn from_offset(offset: &TzOffset) -> Tz {
        offset.tz
    }

    fn offset_from_local_date(&self, local: &NaiveDate) -> MappedLocalTime<TzOffset> {
        self.offset_from_local_datetime(&local.and_time(NaiveTime::MIN))
    }

    fn offset_from_local_datetime(&self, local: &NaiveDateTime) -> MappedLocalTime<TzOffset> {
        let l = local.and_utc().timestamp();
        // The offsets in effect within a day either side, each kept if it maps `local` onto itself.
        let mut offs: Vec<i32> = [-86_400, 0, 86_400]
            .iter()
            .map(|d| self.offset_at(l + d))
            .filter(|&o| self.offset_at(l - i64::from(o)) == o)
            .collect();
        offs.sort_unstable_by(|a, b| b.cmp(a)); // earliest instant (largest offset) first
        offs.dedup();
        match offs[..] {
            [] => MappedLocalTime::None,
            [o] => MappedLocalTime::Single(self.offset(o)),
            [a, .., b] => MappedLocalTime::Ambiguous(self.offset(a), self.offset(b)),
        }
    }

    fn offset_from_utc_date(&self, utc: &NaiveDate) -> TzOffset {
        self.offset_from_utc_datetime(&utc.and_time(NaiveTime::MIN))
    }

    fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> TzOffset {
        self.offset(self.offset_at(utc.and_utc().timestamp()))
    }
}

/// Reads and parses one TZif file; `None` if it is missing or not a usable TZif file.
fn load(path: &Path) -> Option<&'static ::tz::TimeZone> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_TZIF)
        .read_to_end(&mut bytes)
        .ok()?;
    parse_tzif(&bytes).map(|zone| &*Box::leak(Box::new(zone)))
}

/// Parses TZif (RFC 8536) with tz-rs; `None` if it is not a usable file for calendar buckets.
fn parse_tzif(bytes: &[u8]) -> Option<::tz::TimeZone> {
    let zone = ::tz::TimeZone::from_tz_data(bytes).ok()?;
    let z = zone.as_ref();
    let rule_types = match z.extra_rule() {
        None => vec![],
        Some(TransitionRule::Fixed(l)) => vec![*l],
        Some(TransitionRule::Alternate(a)) => vec![*a.std(), *a.dst()],
    };
    // Leap-second ("right/") zones count TAI-like seconds: not what a calendar bucket wants. Offsets
    // beyond ±24 h do not fit chrono's FixedOffset.
    let sane = z.leap_seconds().is_empty()
        && z.local_time_types()
            .iter()
            .chain(&rule_types)
            .all(|l| l.ut_offset().abs() < 86_400);
    sane.then_some(zone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn at(s: &str) -> i64 {
        s.parse::<DateTime<Utc>>().unwrap().timestamp()
    }

    /// A POSIX TZ string as the footer rule of an otherwise empty TZif version 3 file (RFC 8536's
    /// extensions allowed), parsed and evaluated the way a zoneinfo file is.
    #[derive(Debug, PartialEq)]
    struct Posix(::tz::TimeZone);

    impl Posix {
        fn parse(rule: &str) -> Option<Posix> {
            // Header: magic, version 3, 15 reserved bytes, then isutcnt isstdcnt leapcnt timecnt
            // typecnt charcnt; one time type (UTC, designation "") and one designation byte.
            let mut block = b"TZif3".to_vec();
            block.extend([0; 15]);
            for count in [0u32, 0, 0, 0, 1, 1] {
                block.extend(count.to_be_bytes());
            }
            block.extend([0, 0, 0, 0, 0, 0, 0]);
            let mut file = [block.as_slice(), &block].concat();
            file.extend(format!("\n{rule}\n").bytes());
            let zone = parse_tzif(&file)?;
            zone.as_ref().extra_rule().is_some().then_some(Posix(zone))
        }

        fn offset_at(&self, t: i64) -> i32 {
            zone_offset(&self.0, t)
        }
    }

    #[test]
    fn posix_rules_northern_southern_and_all_year() {
        let berlin = Posix::parse("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        assert_eq!(berlin.offset_at(at("2025-03-30T00:59:59Z")), 3600);
        assert_eq!(berlin.offset_at(at("2025-03-30T01:00:00Z")), 7200);
        assert_eq!(berlin.offset_at(at("2025-10-26T00:59:59Z")), 7200);
        assert_eq!(berlin.offset_at(at("2025-10-26T01:00:00Z")), 3600);
        let sydney = Posix::parse("AEST-10AEDT,M10.1.0,M4.1.0/3").unwrap();
        assert_eq!(sydney.offset_at(at("2025-01-01T00:00:00Z")), 11 * 3600);
        assert_eq!(sydney.offset_at(at("2025-07-01T00:00:00Z")), 10 * 3600);
        assert_eq!(sydney.offset_at(at("2025-10-04T15:59:59Z")), 10 * 3600);
        assert_eq!(sydney.offset_at(at("2025-10-04T16:00:00Z")), 11 * 3600);
        let always = Posix::parse("EST5EDT,0/0,J365/25").unwrap();
        for t in [
            "2025-01-01T04:00:00Z",
            "2025-06-01T00:00:00Z",
            "2025-12-31T23:59:59Z",
        ] {
            assert_eq!(always.offset_at(at(t)), -4 * 3600, "{t}");
        }
        let chatham = Posix::parse("<+1245>-12:45<+1345>,M9.5.0/2:45,M4.1.0/3:45").unwrap();
        assert_eq!(
            chatham.offset_at(at("2025-01-01T00:00:00Z")),
            13 * 3600 + 45 * 60
        );
        assert_eq!(
            Posix::parse("<+0530>-5:30").unwrap().offset_at(0),
            5 * 3600 + 1800
        );
        for bad in [
            "",
            "CE",
            "CET",
            "CET-1CEST,M3.5.0",
            "CET-1CEST,M13.5.0,M10.5.0",
            "UTC0x",
        ] {
            assert_eq!(Posix::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_are_checked_and_an_absent_database_is_lenient() {
        let dir = std::env::temp_dir().join(format!("tabula-tz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dirs = [dir.clone()];
        for bad in [
            "",
            "../etc/passwd",
            "/etc/localtime",
            "Europe//Berlin",
            "Europe/Ber lin",
        ] {
            assert!(Tz::resolve(bad, &dirs).is_err(), "{bad}");
        }
        // A database without the name: unknown, as before.
        assert!(Tz::resolve("Mars/Olympus", &dirs).is_err());
        std::fs::write(dir.join("Broken"), b"TZif2 not really").unwrap();
        assert!(Tz::resolve("Broken", &dirs).is_err());
        // No database at all (an initrd): accepted, taken as UTC.
        let none = Tz::resolve("Nowhere/Zone", &[dir.join("absent")]).unwrap();
        assert_eq!(none.name(), "Nowhere/Zone");
        assert_eq!(none.offset_at(at("2025-07-01T00:00:00Z")), 0);
        assert_eq!(Tz::resolve("UTC", &dirs).unwrap(), Tz::UTC);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The system's database agrees with chrono-tz's compiled-in one (the previous implementation),
    /// every 15 minutes around each switch and daily elsewhere, 1990–2090 (past 2037 the TZif footer's rule), for zones whose rules did not
    /// change recently (the two databases may be of different tzdata releases).
    #[test]
    fn agrees_with_the_compiled_in_database() {
        let zones = [
            "Europe/Berlin",
            "Europe/London",
            "America/New_York",
            "America/Los_Angeles",
            "Australia/Sydney",
            "Australia/Adelaide",
            "Pacific/Auckland",
            "Pacific/Chatham",
            "Asia/Kolkata",
            "Asia/Tokyo",
            "Africa/Johannesburg",
            "America/Santiago",
            "Etc/GMT+5",
            "Europe/Lisbon",
        ];
        assert!(
            Path::new("/usr/share/zoneinfo/Europe/Berlin").exists(),
            "these tests need tzdata (/usr/share/zoneinfo)"
        );
        for name in zones {
            let ours: Tz = name.parse().unwrap();
            let theirs: chrono_tz::Tz = name.parse().unwrap();
            let mut t = at("1990-01-01T00:00:00Z");
            let mut checked = 0;
            while t < at("2090-12-31T00:00:00Z") {
                let dt = DateTime::from_timestamp(t, 0).unwrap();
                let want = dt.with_timezone(&theirs).offset().fix();
                let got = dt.with_timezone(&ours);
                assert_eq!(got.offset().fix(), want, "{name} at {dt}");
                assert_eq!(got.date_naive(), dt.with_timezone(&theirs).date_naive());
                let next = t + 86_400;
                let at_next = DateTime::from_timestamp(next, 0)
                    .unwrap()
                    .with_timezone(&theirs);
                // Around a switch, step hourly.
                t = if at_next.offset().fix() != want {
                    t + 900
                } else {
                    next
                };
                checked += 1;
            }
            assert!(checked > 36_000, "{name}: {checked}");
            // Local times: the gap and the fold.
            let local = |s: &str| s.parse::<NaiveDateTime>().unwrap();
            for l in [
                "2025-03-30T02:30:00",
                "2025-10-26T02:30:00",
                "2025-07-01T12:00:00",
            ] {
                let a = ours.from_local_datetime(&local(l)).map(|d| d.timestamp());
                let b = theirs.from_local_datetime(&local(l)).map(|d| d.timestamp());
                assert_eq!(a, b, "{name} {l}");
            }
        }
    }
}
