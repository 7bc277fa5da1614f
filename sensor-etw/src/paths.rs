//! Names as users write them: NT device paths to drive-letter paths,
//! kernel registry paths to HKLM/HKU, SIDs to text and account names.

/// NT device prefixes (`\Device\HarddiskVolume3`) to DOS names (`C:`).
/// The adapter fills it from QueryDosDeviceW for every drive letter;
/// tests fill it by hand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceMap {
    /// (device prefix, replacement), longest prefix first.
    entries: Vec<(String, String)>,
}

impl DeviceMap {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `device` (e.g. `\Device\HarddiskVolume3`) to `dos` (e.g. `C:`).
    pub fn insert(&mut self, device: &str, dos: &str) {
        let device = device.trim_end_matches('\\').to_owned();
        self.entries
            .retain(|(d, _)| !d.eq_ignore_ascii_case(&device));
        // `\Device\Mup` maps to a lone `\`, which must stay.
        let dos = if dos.len() > 1 {
            dos.trim_end_matches('\\')
        } else {
            dos
        };
        self.entries.push((device, dos.to_owned()));
        self.entries.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The DOS form of an NT path, or `None` when no device matches (the
    /// caller keeps the NT form). `\??\C:\x` and `\DosDevices\C:\x` lose
    /// their object-manager prefix; paths already in DOS form pass.
    #[must_use]
    pub fn to_dos(&self, nt: &str) -> Option<String> {
        if nt.is_empty() {
            return Some(String::new());
        }
        for prefix in [r"\??\", r"\DosDevices\", r"\GLOBAL??\"] {
            if let Some(rest) = strip_prefix_ci(nt, prefix) {
                return Some(rest.to_owned());
            }
        }
        if is_dos_path(nt) {
            return Some(nt.to_owned());
        }
        for (device, dos) in &self.entries {
            if let Some(rest) = strip_prefix_ci(nt, device)
                && (rest.is_empty() || rest.starts_with('\\'))
            {
                let rest = if rest.is_empty() { "\\" } else { rest };
                return Some(format!("{dos}{rest}"));
            }
        }
        None
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// `C:\...` or a UNC path (`\\server\share`).
fn is_dos_path(p: &str) -> bool {
    let b = p.as_bytes();
    (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':') || p.starts_with(r"\\")
}

/// The registry key as users name it: `\REGISTRY\MACHINE\X` -> `HKLM\X`,
/// `\REGISTRY\USER\X` -> `HKU\X`; other forms unchanged.
#[must_use]
pub fn registry_user_form(raw: &str) -> String {
    for (prefix, hive) in [(r"\REGISTRY\MACHINE", "HKLM"), (r"\REGISTRY\USER", "HKU")] {
        if let Some(rest) = strip_prefix_ci(raw, prefix)
            && (rest.is_empty() || rest.starts_with('\\'))
        {
            return format!("{hive}{rest}");
        }
    }
    raw.to_owned()
}

/// A binary SID (`SID` structure: revision, sub-authority count, 48-bit
/// big-endian identifier authority, little-endian 32-bit sub-authorities)
/// as `S-1-5-21-...`; `None` when the bytes are not a whole SID.
#[must_use]
pub fn sid_to_string(b: &[u8]) -> Option<String> {
    let revision = *b.first()?;
    let count = usize::from(*b.get(1)?);
    let auth = b.get(2..8)?;
    let subs = b.get(8..8 + 4 * count)?;
    if revision != 1 {
        return None;
    }
    let authority = auth.iter().fold(0u64, |a, x| (a << 8) | u64::from(*x));
    let mut s = format!("S-{revision}-{authority}");
    for c in subs.chunks_exact(4) {
        let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        s.push_str(&format!("-{v}"));
    }
    Some(s)
}

/// Names a SID (`DOMAIN\name`), where the host can tell. The adapter's
/// calls LookupAccountSidW; the decoder caches answers, misses included.
pub trait SidResolver: Send {
    fn account(&mut self, sid: &[u8], text: &str) -> Option<String>;
}

/// A resolver that knows no names (tests, or hosts without lookups).
#[derive(Debug, Default)]
pub struct NoNames;

impl SidResolver for NoNames {
    fn account(&mut self, _sid: &[u8], _text: &str) -> Option<String> {
        None
    }
}

/// A fixed table of SID text -> name, for tests and well-known SIDs.
#[derive(Debug, Default)]
pub struct StaticNames(pub Vec<(String, String)>);

impl SidResolver for StaticNames {
    fn account(&mut self, _sid: &[u8], text: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(s, _)| s == text)
            .map(|(_, n)| n.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> DeviceMap {
        let mut m = DeviceMap::new();
        m.insert(r"\Device\HarddiskVolume3", "C:");
        m.insert(r"\Device\HarddiskVolume31", "D:");
        m.insert(r"\Device\Mup", r"\");
        m
    }

    #[test]
    fn device_paths_become_drive_letter_paths() {
        let m = map();
        assert_eq!(
            m.to_dos(r"\Device\HarddiskVolume3\Windows\notepad.exe")
                .as_deref(),
            Some(r"C:\Windows\notepad.exe")
        );
        assert_eq!(
            m.to_dos(r"\device\harddiskvolume31\x").as_deref(),
            Some(r"D:\x")
        );
        assert_eq!(
            m.to_dos(r"\Device\HarddiskVolume3").as_deref(),
            Some(r"C:\")
        );
        assert_eq!(m.to_dos(r"\Device\HarddiskVolume33\x"), None);
        assert_eq!(m.to_dos(r"\??\C:\x").as_deref(), Some(r"C:\x"));
        assert_eq!(m.to_dos(r"C:\x").as_deref(), Some(r"C:\x"));
        assert_eq!(
            m.to_dos(r"\Device\Mup\srv\share\f").as_deref(),
            Some(r"\\srv\share\f")
        );
    }

    #[test]
    fn registry_paths_take_hive_abbreviations() {
        assert_eq!(
            registry_user_form(r"\REGISTRY\MACHINE\SOFTWARE\X"),
            r"HKLM\SOFTWARE\X"
        );
        assert_eq!(
            registry_user_form(r"\Registry\User\S-1-5-18"),
            r"HKU\S-1-5-18"
        );
        assert_eq!(
            registry_user_form(r"\REGISTRY\MACHINEX"),
            r"\REGISTRY\MACHINEX"
        );
        assert_eq!(registry_user_form("Software"), "Software");
    }

    #[test]
    fn binary_sids_become_text() {
        // S-1-5-18 (LocalSystem)
        assert_eq!(
            sid_to_string(&[1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0]).as_deref(),
            Some("S-1-5-18")
        );
        assert_eq!(sid_to_string(&[1, 2, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0]), None);
        assert_eq!(sid_to_string(&[]), None);
    }
}
