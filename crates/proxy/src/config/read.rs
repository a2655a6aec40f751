//! Bounded reads of configuration files: squid.conf, its `include`s, ACL value files, and
//! (through [`read_bounded`]) the stack file. A configuration name may point anywhere
//! (`include /dev/zero`, a FIFO, a directory), and `--check` must finish in bounded time and
//! memory on any input, so a file is read only if it is a regular file and only up to a cap.
//!
//! The file is opened with `O_NONBLOCK | O_NOCTTY` and its type is then taken from the open
//! descriptor (`fstat`), not from the name: checking the name first and opening afterwards
//! races with a rename, and a plain `open` of a FIFO blocks until a writer appears (the
//! `--check` hang). With `O_NONBLOCK` the open of a FIFO returns at once, `O_NOCTTY` keeps a
//! terminal device from becoming the controlling terminal, and on a regular file both flags
//! change nothing. `O_NOFOLLOW` is not used: symbolic links in `/etc/squid` (a `conf.d`
//! managed by a package or a configuration tool) are normal and must keep working.
//!
//! The size is checked twice: the `fstat` length refuses a large file before reading a
//! byte, and the read itself stops at `cap + 1` bytes (`take`), so a file that grows between
//! the two is still refused without reading past the cap.
//!
//! One configuration also reads at most [`MAX_CONFIG_TOTAL_BYTES`] over all its files
//! ([`Tally`]): a file included again and again (`include big.conf big.conf ...`, or a glob
//! matching thousands of files) would otherwise cost unbounded time, and memory for every ACL
//! value it adds, each file under its own cap.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest squid.conf, included file or ACL value file read (each file on its own).
/// Squid's own configurations are kilobytes; the biggest real ACL files (blocklists of
/// domains) are a few MiB.
pub const MAX_CONFIG_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The longest squid.conf logical line (continuations included), in bytes. Real directives
/// are under a few hundred bytes; a longer line is a mistake or an attack, and each of its
/// characters costs the lexer a position record (24 bytes), so it is refused before lexing.
pub const MAX_CONFIG_LINE_BYTES: usize = 64 * 1024;

/// The most bytes one configuration reads over all its files: the main file, every
/// `include` (counted each time it is included) and every ACL value file.
pub const MAX_CONFIG_TOTAL_BYTES: u64 = 64 * 1024 * 1024;

/// The bytes one configuration has read so far, against [`MAX_CONFIG_TOTAL_BYTES`].
#[derive(Debug, Default)]
pub(crate) struct Tally {
    read: std::cell::Cell<u64>,
    cap: Option<u64>,
}

impl Tally {
    #[cfg(test)]
    pub(crate) fn with_cap(cap: u64) -> Tally {
        Tally {
            read: Default::default(),
            cap: Some(cap),
        }
    }

    /// Counts `bytes` more; refused (and not counted) when they would pass the total.
    pub(crate) fn charge(&self, bytes: u64) -> io::Result<()> {
        let cap = self.cap.unwrap_or(MAX_CONFIG_TOTAL_BYTES);
        let before = self.read.get();
        let after = before.saturating_add(bytes);
        if after > cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "it would take the configuration's files together past the {} limit \
                     ({} read before it, {} in it)",
                    describe(cap),
                    approximately(before),
                    approximately(bytes)
                ),
            ));
        }
        self.read.set(after);
        Ok(())
    }
}

/// A byte count rounded for messages: "12.5 MiB", "3 KiB", "100 bytes".
fn approximately(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    match bytes {
        b if b >= 1024 * 1024 => format!("{:.1} MiB", b as f64 / MIB),
        b if b >= 1024 => format!("{} KiB", b / 1024),
        b => format!("{b} bytes"),
    }
}

/// The largest stack file read. The built-in stack is about 3 KiB; a stack of hundreds of
/// groups stays well below this.
pub const MAX_STACK_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Reads the regular file at `path`, refusing anything else and anything over `cap` bytes.
/// Errors are `io::Error`s whose message says what was found (callers add the file name).
pub fn read_bounded(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO (named pipe)"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else {
            "not a file"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what}, not a regular file (only regular files are read)"),
        ));
    }
    let too_big = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than the {} limit", describe(cap)),
        )
    };
    if meta.len() > cap {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may have grown since fstat: read one byte past the cap to tell.
    (&file).take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(too_big());
    }
    Ok(bytes)
}

/// A byte count for messages: "16 MiB", "64 KiB", "100 bytes".
pub(crate) fn describe(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::test_support::TempDir;
    use super::*;

    #[test]
    fn a_regular_file_is_read_whole() {
        let dir = TempDir::new("read-ok");
        dir.write("a.conf", "via off\n");
        let bytes = read_bounded(&dir.0.join("a.conf"), 8).unwrap();
        assert_eq!(bytes, b"via off\n");
    }

    #[test]
    fn over_the_cap_is_refused() {
        let dir = TempDir::new("read-big");
        dir.write("a.conf", "via off\n");
        let e = read_bounded(&dir.0.join("a.conf"), 7).unwrap_err();
        assert_eq!(e.to_string(), "larger than the 7 bytes limit");
    }

    #[test]
    fn devices_directories_and_fifos_are_refused_at_once() {
        let e = read_bounded(Path::new("/dev/zero"), MAX_CONFIG_FILE_BYTES).unwrap_err();
        assert!(e.to_string().starts_with("a character device"), "{e}");
        let dir = TempDir::new("read-kinds");
        let e = read_bounded(&dir.0, MAX_CONFIG_FILE_BYTES).unwrap_err();
        assert!(e.to_string().starts_with("a directory"), "{e}");
        let fifo = dir.0.join("fifo");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `name` is a valid NUL-terminated path for the whole call.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let start = Instant::now();
        let e = read_bounded(&fifo, MAX_CONFIG_FILE_BYTES).unwrap_err();
        assert!(e.to_string().starts_with("a FIFO"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn the_tally_refuses_what_would_pass_the_total() {
        let tally = Tally::with_cap(100);
        tally.charge(60).unwrap();
        let e = tally.charge(41).unwrap_err();
        assert_eq!(
            e.to_string(),
            "it would take the configuration's files together past the 100 bytes limit \
             (60 bytes read before it, 41 bytes in it)"
        );
        tally.charge(40).unwrap();
        assert!(tally.charge(1).is_err());
        assert_eq!(approximately(3 * 1024 * 1024 / 2), "1.5 MiB");
    }

    #[test]
    fn sizes_read_as_words() {
        assert_eq!(describe(MAX_CONFIG_FILE_BYTES), "16 MiB");
        assert_eq!(describe(MAX_CONFIG_LINE_BYTES as u64), "64 KiB");
        assert_eq!(describe(100), "100 bytes");
    }
}
