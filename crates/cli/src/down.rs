//! `proxyfleet down`: asks the running `up` to stop (what SIGTERM does: deregister, drain
//! and stop every instance) and waits until its admin API stops answering.

use std::time::{Duration, Instant};

use clap::Args;

use crate::client::{block_on, Api, StateDir};
use crate::Failure;

/// How long `down` waits for `up` to go away.
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

#[derive(Args)]
pub struct DownArgs {
    #[command(flatten)]
    dir: StateDir,
}

pub fn run(args: DownArgs) -> Result<(), Failure> {
    let api = Api::locate_with_token(&args.dir.state_dir)?;
    block_on(async {
        api.post("/api/down", None).await?;
        wait_until_gone(&api, DEADLINE).await
    })?;
    println!("stopped");
    Ok(())
}

/// Polls until nothing accepts connections at the API's address.
async fn wait_until_gone(api: &Api, deadline: Duration) -> Result<(), Failure> {
    let until = Instant::now() + deadline;
    while api.listening().await {
        if Instant::now() >= until {
            return Err(anyhow::anyhow!(
                "proxyfleet up (admin API at {}) is still answering after {}",
                api.addr,
                humantime::format_duration(deadline)
            )
            .into());
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::TestUnwrap;

    #[tokio::test]
    async fn a_listener_that_stays_is_reported_after_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        std::fs::write(dir.path().join("admin.addr"), format!("{addr}\n")).unwrap();
        let api = Api::locate(dir.path()).must();
        let err = wait_until_gone(&api, Duration::from_millis(300))
            .await
            .fails();
        assert_eq!(
            format!("{:#}", err.error),
            format!("proxyfleet up (admin API at {addr}) is still answering after 300ms")
        );
        drop(listener);
        wait_until_gone(&api, Duration::from_secs(5)).await.must();
    }
}
