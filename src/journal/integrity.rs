//! Guards against a journal that silently lost data.
//!
//! sled 0.34 recovers a damaged log by truncating it at the first bad record, and panics on
//! some corruptions. Neither may turn into "start from whatever is left": dualseal would forget
//! proofs and audit events without a word. Two guards:
//!
//! - **High-water mark.** Every durable flush bumps a generation counter inside sled, and at
//!   most once a second (and at shutdown) the generation is also written, fsynced, to a small
//!   file beside the database. At open, a database whose generation is behind the file lost
//!   writes: the journal refuses to open and names the remedies. Restoring a whole journal
//!   directory from a backup restores its file too, so a deliberate restore opens normally.
//! - **Panic guard.** sled's recovery runs inside `catch_unwind`; a panic there becomes a
//!   `Corrupt` error. The daemon's panic hook asks [`is_guarded`] and only aborts outside.

use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};

/// File beside the sled database holding the last durable generation.
pub const HWM_FILE: &str = "dualseal-high-water-mark";

thread_local! {
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Whether the current thread is inside a guarded journal operation. A panic hook that sees
/// `true` should record the message with [`record_panic`] and return instead of aborting.
pub fn is_guarded() -> bool {
    GUARDED.with(Cell::get)
}

/// Records a panic message for the guarded operation to report.
pub fn record_panic(message: String) {
    LAST_PANIC.with(|p| *p.borrow_mut() = Some(message));
}

/// Runs `f`, turning a panic inside it into `Err(message)`.
pub(super) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    GUARDED.with(|g| g.set(true));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(false));
    out.map_err(|payload| {
        LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned())
    })
}

pub(super) fn hwm_path(dir: &Path) -> PathBuf {
    dir.join(HWM_FILE)
}

/// Reads the high-water mark; `None` when the file does not exist yet.
pub(super) fn read_hwm(dir: &Path) -> std::io::Result<Option<u64>> {
    match std::fs::read_to_string(hwm_path(dir)) {
        Ok(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the high-water mark atomically (temp file, fsync, rename).
pub(super) fn write_hwm(dir: &Path, generation: u64) -> std::io::Result<()> {
    let tmp = dir.join(format!("{HWM_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{generation}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, hwm_path(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_inside_the_guard_become_errors() {
        let r: Result<(), String> = guarded(|| panic!("sled says no"));
        assert!(r.unwrap_err().contains("sled says no"));
        assert!(!is_guarded());
    }

    #[test]
    fn high_water_mark_round_trips() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_hwm(d.path()).unwrap(), None);
        write_hwm(d.path(), 42).unwrap();
        assert_eq!(read_hwm(d.path()).unwrap(), Some(42));
    }
}
