//! The modes of what `up` writes, whatever its umask: the state directory and
//! `STATE/instances/` 0711, every instance directory 0700 (it holds its rendered config and
//! its access log: who visited what), state files 0600, an instance's stdout/stderr 0640.
//! Everything is created with its mode from the start (never readable by others for a
//! moment), and what already exists with another mode is set to it.
//!
//! 0711, not 0700, on the two directories above the instances': others may pass through
//! but not list or read anything (every file there is 0600, every instance directory
//! 0700). An instance that drops to another user, as Squid does (`cache_effective_user
//! proxy`, its directory chowned to that user), must reach its own directory: under a 0700
//! state directory Squid cannot open its logs and stops (drill 9).

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of the state directory and of `STATE/instances/`: search only for others.
pub const STATE_DIR_MODE: u32 = 0o711;
/// The mode of every instance directory.
pub const DIR_MODE: u32 = 0o700;
/// The mode of state files (state.db and its -wal/-shm, admin.token, admin.addr).
pub const STATE_FILE_MODE: u32 = 0o600;
/// The mode of an instance's stdout.log and stderr.log: the owner's group may read them
/// (a log shipper), others not.
pub const LOG_MODE: u32 = 0o640;

/// Creates `dir` 0711 (missing parents as usual), or sets an existing one to 0711. Returns
/// the old mode when it was another, so the caller can say so.
pub fn state_dir(dir: &Path) -> io::Result<Option<u32>> {
    make_dir(dir, STATE_DIR_MODE)?;
    let old = fs::metadata(dir)
        .map_err(|e| at(dir, e))?
        .permissions()
        .mode()
        & 0o7777;
    if old == STATE_DIR_MODE {
        return Ok(None);
    }
    fs::set_permissions(dir, Permissions::from_mode(STATE_DIR_MODE)).map_err(|e| at(dir, e))?;
    Ok(Some(old))
}

/// Creates `dir` 0700 (missing parents as usual); an existing directory is left as it is
/// (an instance's directory may have been chowned to the user it runs as).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    make_dir(dir, DIR_MODE)?;
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

/// `dir` itself with `mode`, its missing parents with the umask's modes (a 0700 parent
/// would shut out an instance that runs as another user).
fn make_dir(dir: &Path, mode: u32) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| at(parent, e))?;
    }
    match DirBuilder::new().mode(mode).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(at(dir, e)),
        _ => Ok(()),
    }
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
    fn the_state_directory_is_0711_and_a_changed_mode_is_said_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state/nested");
        assert_eq!(state_dir(&dir).unwrap(), None);
        assert_eq!(mode(&dir), 0o711);
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            state_dir(&dir).unwrap(),
            Some(0o755),
            "tightened, and said so"
        );
        assert_eq!(mode(&dir), 0o711);
        assert_eq!(state_dir(&dir).unwrap(), None, "said once");
        let instance = dir.join("i-1");
        create_dir(&instance).unwrap();
        assert_eq!(mode(&instance), 0o700);
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
        let err = create_dir(Path::new("/proc/self/no/such")).unwrap_err();
        assert!(
            err.to_string().starts_with("/proc/self/no: "),
            "the parent it failed on: {err}"
        );
    }
}
