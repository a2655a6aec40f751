//! The modes of what `up` writes, whatever its umask: the state directory and every
//! instance directory 0700 (an instance's directory holds its rendered config and its
//! access log: who visited what), state files 0600, an instance's stdout/stderr 0640.
//! Everything is created with its mode from the start (never readable by others for a
//! moment), and what already exists with a looser mode is tightened.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of the state directory and of every instance directory.
pub const DIR_MODE: u32 = 0o700;
/// The mode of state files (state.db and its -wal/-shm, admin.token, admin.addr).
pub const STATE_FILE_MODE: u32 = 0o600;
/// The mode of an instance's stdout.log and stderr.log: the owner's group may read them
/// (a log shipper), others not.
pub const LOG_MODE: u32 = 0o640;

/// Creates `dir` (and missing parents) 0700, or tightens an existing one to 0700. Returns
/// the old mode when it was looser, so the caller can say so.
pub fn private_dir(dir: &Path) -> io::Result<Option<u32>> {
    create_dir(dir)?;
    tighten(dir, DIR_MODE)
}

/// Creates `dir` (and missing parents) 0700; an existing directory is left as it is.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| at(dir, e))?;
    // The umask may have taken bits away, never added any; an owner without rwx on its
    // own directory could not use it.
    let mode = fs::metadata(dir)
        .map_err(|e| at(dir, e))?
        .permissions()
        .mode()
        & 0o777;
    if mode & DIR_MODE != DIR_MODE {
        fs::set_permissions(dir, Permissions::from_mode(mode | DIR_MODE))
            .map_err(|e| at(dir, e))?;
    }
    Ok(())
}

/// Makes sure `path` exists with at most `mode` (created empty if absent, tightened if
/// looser). Returns the old mode when it was looser.
pub fn private_file(path: &Path, mode: u32) -> io::Result<Option<u32>> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(mode)
        .open(path)
        .map_err(|e| at(path, e))?;
    tighten(path, mode)
}

/// Writes `contents` to `path` (created with `mode`, or truncated and tightened to it).
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| at(path, e))?;
    tighten(path, mode)?;
    file.write_all(contents).map_err(|e| at(path, e))
}

/// Opens an instance's stdout or stderr log for appending, created 0640.
pub fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LOG_MODE)
        .open(path)
        .map_err(|e| at(path, e))
}

/// Removes from `path`'s mode every bit `mode` lacks; the old mode if any was removed.
fn tighten(path: &Path, mode: u32) -> io::Result<Option<u32>> {
    let old = fs::metadata(path)
        .map_err(|e| at(path, e))?
        .permissions()
        .mode()
        & 0o7777;
    if old & !mode == 0 {
        return Ok(None);
    }
    fs::set_permissions(path, Permissions::from_mode(old & mode)).map_err(|e| at(path, e))?;
    Ok(Some(old))
}

/// `e` with the path it happened on.
fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_directory_is_private_and_an_open_one_is_tightened_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state/nested");
        assert_eq!(private_dir(&dir).unwrap(), None);
        assert_eq!(mode(&dir), 0o700);
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            private_dir(&dir).unwrap(),
            Some(0o755),
            "tightened, and said so"
        );
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(private_dir(&dir).unwrap(), None, "said once");
    }

    #[test]
    fn state_files_are_created_or_tightened_to_their_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("state.db");
        assert_eq!(private_file(&db, STATE_FILE_MODE).unwrap(), None);
        assert_eq!(mode(&db), 0o600);
        fs::write(&db, "kept").unwrap();
        fs::set_permissions(&db, Permissions::from_mode(0o644)).unwrap();
        assert_eq!(private_file(&db, STATE_FILE_MODE).unwrap(), Some(0o644));
        assert_eq!(mode(&db), 0o600);
        assert_eq!(
            fs::read_to_string(&db).unwrap(),
            "kept",
            "contents untouched"
        );

        let conf = tmp.path().join("squid.conf");
        fs::write(&conf, "old, longer").unwrap();
        fs::set_permissions(&conf, Permissions::from_mode(0o666)).unwrap();
        write_file(&conf, b"new", 0o600).unwrap();
        assert_eq!(
            (mode(&conf), fs::read_to_string(&conf).unwrap().as_str()),
            (0o600, "new")
        );

        let log = tmp.path().join("stdout.log");
        drop(open_log(&log).unwrap());
        assert_eq!(mode(&log), 0o640);
    }

    #[test]
    fn errors_name_the_path() {
        let err = private_dir(Path::new("/proc/self/no/such")).unwrap_err();
        assert!(err.to_string().starts_with("/proc/self/no/such: "), "{err}");
    }
}
