//! `proxyfleet diff -f STACK` and `proxyfleet apply -f STACK [--yes]`: what changing the
//! running tier to another stack file takes, object by object and what each costs (in
//! place, reload instances, not allowed while running and why); `apply` then asks (unless
//! `--yes`) and carries it out, all or nothing. The running `up` plans against the stack it
//! runs (its API: `POST /api/plan`, `/api/apply`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;
use serde_json::json;

use crate::client::{block_on, Api, StateDir};
use crate::Failure;

#[derive(Args)]
pub struct DiffArgs {
    /// The stack file to compare with the running tier's.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    #[command(flatten)]
    dir: StateDir,
}

#[derive(Args)]
pub struct ApplyArgs {
    /// The stack file the running tier is to follow.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Apply without asking.
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    dir: StateDir,
}

#[derive(Deserialize)]
struct PlanAnswer {
    steps: Vec<StepAnswer>,
    applicable: bool,
}

#[derive(Deserialize)]
struct StepAnswer {
    object: String,
    change: String,
    cost: CostAnswer,
}

#[derive(Deserialize)]
struct CostAnswer {
    kind: String,
    why: Option<String>,
}

impl StepAnswer {
    fn line(&self) -> String {
        let cost = match (self.cost.kind.as_str(), &self.cost.why) {
            ("not_while_running", Some(why)) => format!("not allowed while running: {why}"),
            (kind, _) => kind.replace('_', " "),
        };
        format!("  {}: {} ({cost})", self.object, self.change)
    }
}

/// The file's text, validated here first so that its errors name the file, line and column.
fn read(file: &Path) -> Result<String, Failure> {
    proxyfleet_stack::load(file).map_err(|e| Failure {
        code: 2,
        error: anyhow::anyhow!("{e}"),
    })?;
    std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()).into())
}

/// Prints the plan; whether it has anything to do.
fn print(plan: &PlanAnswer, file: &Path) -> bool {
    if plan.steps.is_empty() {
        println!(
            "no changes: the running tier follows {} already",
            file.display()
        );
        return false;
    }
    println!("plan for {}:", file.display());
    for step in &plan.steps {
        println!("{}", step.line());
    }
    true
}

pub fn diff(args: DiffArgs) -> Result<(), Failure> {
    let text = read(&args.file)?;
    let api = Api::locate_with_token(&args.dir.state_dir)?;
    let plan: PlanAnswer = block_on(api.post_json("/api/plan", json!({ "stack": text })))?;
    if print(&plan, &args.file) && !plan.applicable {
        println!("apply would change nothing: some changes are not allowed while running");
    }
    Ok(())
}

pub fn apply(args: ApplyArgs) -> Result<(), Failure> {
    let text = read(&args.file)?;
    let api = Api::locate_with_token(&args.dir.state_dir)?;
    let plan: PlanAnswer = block_on(api.post_json("/api/plan", json!({ "stack": text.clone() })))?;
    if !print(&plan, &args.file) {
        return Ok(());
    }
    if !plan.applicable {
        return Err(anyhow::anyhow!(
            "nothing applied: some changes are not allowed while running (above)"
        )
        .into());
    }
    if !args.yes && !confirmed(plan.steps.len())? {
        return Err(anyhow::anyhow!("nothing applied").into());
    }
    let done: PlanAnswer = block_on(api.post_json("/api/apply", json!({ "stack": text })))?;
    println!(
        "applied {} change(s); the activity history records them",
        done.steps.len()
    );
    Ok(())
}

/// Asks on the terminal; without one, `--yes` is needed.
fn confirmed(changes: usize) -> Result<bool, Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(anyhow::anyhow!(
            "not applied: standard input is not a terminal to confirm on; pass --yes"
        )
        .into());
    }
    print!("apply these {changes} change(s) to the running tier? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
