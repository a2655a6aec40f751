//! `proxyfleet-bench-report RESULTS.json --md RESULTS.md --svg results.svg`

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use proxyfleet_bench_report::{chart, markdown, metrics, results};

const USAGE: &str = "usage: proxyfleet-bench-report RESULTS.json --md OUT.md --svg OUT.svg";

fn main() {
    if let Err(e) = run() {
        eprintln!("proxyfleet-bench-report: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut input = None;
    let mut md = None;
    let mut svg = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--md" => md = args.next().map(PathBuf::from),
            "--svg" => svg = args.next().map(PathBuf::from),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ if input.is_none() && !a.starts_with('-') => input = Some(PathBuf::from(a)),
            _ => bail!("unexpected argument '{a}'\n{USAGE}"),
        }
    }
    let (Some(input), Some(md), Some(svg)) = (input, md, svg) else {
        bail!("{USAGE}");
    };
    let text =
        std::fs::read_to_string(&input).with_context(|| format!("reading {}", input.display()))?;
    let r: results::Results =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", input.display()))?;
    if r.schema != results::SCHEMA {
        bail!(
            "{}: schema {} (this report reads {})",
            input.display(),
            r.schema,
            results::SCHEMA
        );
    }
    let rows = metrics::rows(&r);
    let svg_name = relative_name(&svg, &md);
    write(&md, &markdown::render(&r, &rows, &svg_name))?;
    let title = format!(
        "proxyfleet vs HAProxy + Squid, {} ({} cores)",
        r.date, r.machine.cores
    );
    let doc =
        chart::render(&rows, &title).map_err(|e| anyhow::anyhow!("drawing the chart: {e}"))?;
    write(&svg, &doc)?;
    eprintln!("wrote {} and {}", md.display(), svg.display());
    Ok(())
}

/// How the Markdown file refers to the image: by file name when they share a directory.
fn relative_name(svg: &Path, md: &Path) -> String {
    let same_dir = svg.parent().map(Path::to_path_buf).unwrap_or_default()
        == md.parent().map(Path::to_path_buf).unwrap_or_default();
    match (same_dir, svg.file_name()) {
        (true, Some(name)) => name.to_string_lossy().into_owned(),
        _ => svg.display().to_string(),
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
