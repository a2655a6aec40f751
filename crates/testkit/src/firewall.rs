//! Removing the nftables tables a test's tier left: an agent keeps its table when it stops
//! (its instances keep serving, protected) and a killed one cannot remove it, so the test
//! does, by the table's comment (`proxyfleet STATE_DIR`), which names the test's directory.

use std::process::Command;

/// Deletes every `inet proxyfleet_*` table whose comment names a path under `dir`. Without
/// `nft` (or root) there is nothing to delete.
pub fn remove_tables_under(dir: &std::path::Path) {
    let needle = format!("proxyfleet {}", dir.display());
    let Ok(out) = Command::new("nft").args(["list", "tables"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.strip_prefix("table inet ") else {
            continue;
        };
        if !name.starts_with("proxyfleet_") {
            continue;
        }
        let Ok(table) = Command::new("nft")
            .args(["list", "table", "inet", name])
            .output()
        else {
            continue;
        };
        if String::from_utf8_lossy(&table.stdout).contains(&needle) {
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", name])
                .status();
        }
    }
}
