//! How many splice(2) pipes may be open at once. A spliced direction holds a pipe — two
//! descriptors — on top of the flow's two sockets, so a flood of bulk flows could triple what
//! the flows use and leave nothing for health checks. The balancer gives its flows only the
//! descriptors its open-file limit has left after flows, checks and the reserve; a direction
//! that finds no pipe free keeps copying through its buffer.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A process-wide cap on open splice pipes (`Clone` shares it).
#[derive(Debug, Clone)]
pub struct PipeBudget(Option<Arc<Semaphore>>);

/// One pipe's place in the budget, given back when dropped.
#[derive(Debug)]
pub struct PipePermit(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl PipeBudget {
    /// No cap: every bulk direction may splice (a pipe that cannot be created for want of
    /// descriptors still falls back to the buffer).
    pub fn unlimited() -> PipeBudget {
        PipeBudget(None)
    }

    /// At most `pipes` open at once (0: never splice).
    pub fn new(pipes: usize) -> PipeBudget {
        PipeBudget(Some(Arc::new(Semaphore::new(
            pipes.min(Semaphore::MAX_PERMITS),
        ))))
    }

    /// A place for one more pipe, or `None` when the budget is used up.
    pub fn take(&self) -> Option<PipePermit> {
        match &self.0 {
            None => Some(PipePermit(None)),
            Some(s) => s
                .clone()
                .try_acquire_owned()
                .ok()
                .map(|p| PipePermit(Some(p))),
        }
    }

    /// Pipes that may still be opened (`None`: unlimited).
    pub fn available(&self) -> Option<usize> {
        self.0.as_ref().map(|s| s.available_permits())
    }
}

impl Default for PipeBudget {
    fn default() -> Self {
        PipeBudget::unlimited()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_come_back_when_dropped() {
        let budget = PipeBudget::new(1);
        let first = budget.take().expect("one pipe");
        assert!(budget.take().is_none(), "the budget is one pipe");
        drop(first);
        assert!(budget.take().is_some());
        assert!(PipeBudget::new(0).take().is_none());
        assert!(PipeBudget::unlimited().take().is_some());
    }
}
