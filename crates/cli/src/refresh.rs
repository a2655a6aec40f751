//! `proxyfleet refresh GROUP [--cancel] [--min-healthy-percentage N]`: replaces every
//! instance of the group, one at a time, by one launched from the launch template in force
//! (the cloud's instance refresh); `apply` starts one when a template changes.

use clap::Args;
use serde_json::json;

use crate::client::{block_on, encode, Api, StateDir};
use crate::Failure;

#[derive(Args)]
pub struct RefreshArgs {
    /// The group.
    group: String,
    /// End the refresh in progress (the instances replaced so far stay).
    #[arg(long)]
    cancel: bool,
    /// Never fewer than this share of the desired capacity in service (new instances are
    /// launched first, so the refresh goes one instance at a time whatever it is).
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(0..=100))]
    min_healthy_percentage: u32,
    #[command(flatten)]
    dir: StateDir,
}

pub fn run(args: RefreshArgs) -> Result<(), Failure> {
    let api = Api::locate_with_token(&args.dir.state_dir)?;
    let path = format!("/api/groups/{}/refresh", encode(&args.group));
    block_on(api.post(
        &path,
        Some(
            json!({ "cancel": args.cancel, "min_healthy_percentage": args.min_healthy_percentage }),
        ),
    ))?;
    if args.cancel {
        println!("group {}: instance refresh cancelled", args.group);
    } else {
        println!(
            "group {}: instance refresh started (status shows its progress)",
            args.group
        );
    }
    Ok(())
}
