//! TCP health check: the target accepts a connection (and, with PROXY v2, its LOCAL header).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::{HealthCheck, ProbeFuture};
use crate::connect::connect_from;

pub struct TcpCheck {
    pub proxy_protocol_v2: bool,
}

impl HealthCheck for TcpCheck {
    fn probe(&self, source: IpAddr, target: SocketAddr, timeout: Duration) -> ProbeFuture<'_> {
        Box::pin(async move {
            let attempt = async {
                let mut stream = connect_from(source, target, false).await?;
                if self.proxy_protocol_v2 {
                    stream.write_all(&crate::proxy_header::local()).await?;
                }
                Ok(())
            };
            super::within(timeout, attempt).await
        })
    }
}
