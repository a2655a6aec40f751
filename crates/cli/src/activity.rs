//! `proxyfleet activity [--json] [--group G] [--limit N]`: the group controller's history of
//! launches, terminations and failures, newest first, each with its cause.

use std::time::{Duration, UNIX_EPOCH};

use clap::Args;
use proxyfleet_admin::view::ActivityView;

use crate::client::{block_on, encode, table, Api, StateDir};
use crate::Failure;

#[derive(Args)]
pub struct ActivityArgs {
    /// Print the admin API's JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Only this group's activities.
    #[arg(long)]
    group: Option<String>,
    /// At most this many (the newest).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// A tier of agents: the history in the store this stack names (etcd), or in a lone
    /// agent's --state-dir.
    #[arg(short = 'f', long = "file")]
    file: Option<std::path::PathBuf>,
    #[command(flatten)]
    dir: StateDir,
}

pub fn run(args: ActivityArgs) -> Result<(), Failure> {
    if let Some(file) = &args.file {
        let stack = crate::tier::load_stack(file)?;
        let store = crate::tier::open_store(&stack, &args.dir.state_dir, false)?;
        let list =
            block_on(async { Ok(proxyfleet_roles::history::read(&*store, args.limit).await?) })?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&list)?);
        } else {
            print!("{}", crate::tier::render_activity(&list));
        }
        return Ok(());
    }
    let api = Api::locate(&args.dir.state_dir)?;
    let path = query(args.group.as_deref(), args.limit);
    let list: Vec<ActivityView> = block_on(api.get_json(&path))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print!("{}", render(&list));
    }
    Ok(())
}

fn query(group: Option<&str>, limit: usize) -> String {
    match group {
        Some(g) => format!("/api/activity?group={}&limit={limit}", encode(g)),
        None => format!("/api/activity?limit={limit}"),
    }
}

/// A table, newest first (the API's order).
pub fn render(list: &[ActivityView]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            vec![
                time(a.start),
                a.status.clone(),
                a.group.clone(),
                a.description.replace('\n', " "),
                a.cause.replace('\n', " "),
            ]
        })
        .collect();
    table(&["TIME", "STATUS", "GROUP", "DESCRIPTION", "CAUSE"], &rows)
}

/// Seconds since the epoch as UTC `YYYY-MM-DDTHH:MM:SSZ`.
pub fn time(epoch_seconds: f64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs_f64(epoch_seconds.max(0.0));
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encodes_the_group() {
        assert_eq!(query(None, 100), "/api/activity?limit=100");
        assert_eq!(
            query(Some("web proxies"), 5),
            "/api/activity?group=web%20proxies&limit=5"
        );
    }

    #[test]
    fn renders_newest_first_with_utc_times() {
        let a = |id: i64, start: f64, status: &str| {
            ActivityView {
            id,
            group: "proxies".into(),
            description: format!("Launching a new instance: i-{id}"),
            cause: "an instance was taken out of service in response to a load balancer health check failure".into(),
            status: status.into(),
            start,
            end: None,
        }
        };
        let out = render(&[
            a(2, 1_700_000_100.0, "InProgress"),
            a(1, 1_700_000_000.5, "Successful"),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("TIME                  STATUS      GROUP"),
            "{out}"
        );
        assert!(
            lines[1].starts_with(
                "2023-11-14T22:15:00Z  InProgress  proxies  Launching a new instance: i-2"
            ),
            "{out}"
        );
        assert!(
            lines[2].starts_with(
                "2023-11-14T22:13:20Z  Successful  proxies  Launching a new instance: i-1"
            ),
            "{out}"
        );
        assert!(lines[2].ends_with("health check failure"), "{out}");
    }
}
