//! The two system commands the agent runs to change a host's networking, `ip` and `nft`:
//! their errors carry the command and its own message.

use std::io;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Runs `ip ARGS`: its stdout, or an error with the command and its stderr. The kind
/// follows the kernel's answer where callers care (`File exists`, `Cannot assign requested
/// address`, `Operation not permitted`).
pub(crate) async fn ip(args: &[&str]) -> io::Result<String> {
    let command = format!("ip {}", args.join(" "));
    let output = Command::new("ip")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run `{command}`: {e}")))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    let kind = if stderr.contains("File exists") {
        io::ErrorKind::AlreadyExists
    } else if stderr.contains("Cannot assign requested address") {
        io::ErrorKind::AddrNotAvailable
    } else if stderr.contains("Operation not permitted") {
        io::ErrorKind::PermissionDenied
    } else {
        io::ErrorKind::Other
    };
    Err(io::Error::new(
        kind,
        format!("`{command}` failed ({}): {stderr}", output.status),
    ))
}

/// An nftables script that replaces table `family name` with `body` (the table's contents)
/// in one transaction, whether it existed or not.
pub(crate) fn replace_table(family: &str, name: &str, body: &str) -> String {
    format!(
        "{}table {family} {name} {{\n{body}}}\n",
        delete_table(family, name)
    )
}

/// An nftables script that removes table `family name` whether it exists or not.
pub(crate) fn delete_table(family: &str, name: &str) -> String {
    format!("add table {family} {name}\ndelete table {family} {name}\n")
}

/// Runs `nft -f -` on `script` (one transaction: all of it or nothing).
pub(crate) async fn nft(script: &str) -> io::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run nft: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(script.as_bytes()).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "nft: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}
