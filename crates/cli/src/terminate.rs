//! `proxyfleet terminate ID [--decrement-desired]`: takes an instance out of service and
//! stops it; its group launches a replacement unless the desired capacity goes down with it.

use clap::Args;
use serde_json::json;

use crate::client::{block_on, encode, Api, StateDir};
use crate::Failure;

#[derive(Args)]
pub struct TerminateArgs {
    /// The instance id (see `proxyfleet status`).
    id: String,
    /// Lower the group's desired capacity by one instead of replacing the instance.
    #[arg(long)]
    decrement_desired: bool,
    #[command(flatten)]
    dir: StateDir,
}

pub fn run(args: TerminateArgs) -> Result<(), Failure> {
    let api = Api::locate_with_token(&args.dir.state_dir)?;
    let path = format!("/api/instances/{}/terminate", encode(&args.id));
    let body = json!({ "decrement_desired": args.decrement_desired });
    block_on(api.post(&path, Some(body)))?;
    if args.decrement_desired {
        println!("{}: terminating; desired capacity lowered by one", args.id);
    } else {
        println!("{}: terminating; its group will replace it", args.id);
    }
    Ok(())
}
