//! `proxyfleet scale GROUP N`: sets a group's desired capacity (within its min and max).

use clap::Args;
use serde_json::json;

use crate::client::{block_on, encode, Api, StateDir};
use crate::Failure;

#[derive(Args)]
pub struct ScaleArgs {
    /// The group.
    group: String,
    /// Its new desired capacity.
    desired: u32,
    #[command(flatten)]
    dir: StateDir,
}

pub fn run(args: ScaleArgs) -> Result<(), Failure> {
    let api = Api::locate_with_token(&args.dir.state_dir)?;
    let path = format!("/api/groups/{}/scale", encode(&args.group));
    block_on(api.post(&path, Some(json!({ "desired": args.desired }))))?;
    println!(
        "group {}: desired capacity set to {}",
        args.group, args.desired
    );
    Ok(())
}
