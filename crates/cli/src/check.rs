//! `proxyfleet check [-f FILE]`: validates a stack file and explains what will not work,
//! without starting anything. Exit 0: fine (warnings may be printed); 1: the reachability
//! check found errors; 2: the file itself is invalid (file:line:column: object: message).

use std::path::PathBuf;

use clap::Args;
use proxyfleet_stack::budget::DescriptorBudget;
use proxyfleet_stack::check::{check, Severity};

use crate::Failure;

#[derive(Args)]
pub struct CheckArgs {
    /// The stack file (default: the built-in stack).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
}

pub fn run(args: CheckArgs) -> Result<(), Failure> {
    let (stack, name) = match &args.file {
        Some(path) => (
            proxyfleet_stack::load(path).map_err(|e| Failure {
                code: 2,
                error: anyhow::anyhow!("{e}"),
            })?,
            path.display().to_string(),
        ),
        None => (
            proxyfleet_stack::builtin(),
            "the built-in stack".to_string(),
        ),
    };
    let findings = check(&stack);
    for f in &findings {
        println!("{f}");
    }
    let budget = DescriptorBudget::of(&stack);
    let hard = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(u64::MAX, |(_, hard)| hard);
    let mut warnings = findings.len();
    if budget.total() > hard {
        warnings += 1;
        let flows = proxyfleet_stack::budget::flow_limit(&budget, hard).unwrap_or(0);
        println!(
            "warning: load_balancers: the stack needs {} file descriptors ({} for flows at every \
             node's max_connections, {} for health checks, {} reserved), more than this \
             machine's open-file limit {hard}: `up` here would hold at most {flows} flows at once",
            budget.total(),
            budget.flows,
            budget.checks,
            budget.reserved
        );
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    if errors > 0 {
        return Err(Failure {
            code: 1,
            error: anyhow::anyhow!("{name}: {errors} problem(s) found"),
        });
    }
    println!("{name}: OK ({warnings} warning(s))");
    Ok(())
}
