//! `test`: declarative suites of requests and expected answers.

use sidecarctl::{runtime, testsuite};

use anyhow::bail;
use std::io::Write;
use std::process::ExitCode;

use runtime::Runtime;

use crate::cli::TestArgs;

/// `sidecarctl test`.
pub fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let TestArgs { paths, registry } = args;
    let files = testsuite::collect(&paths)?;
    if files.is_empty() {
        bail!(
            "no *.suite.yaml files under {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let runtime = Runtime::new()?;
    let mut stdout = std::io::stdout().lock();
    let outcome = testsuite::run(&runtime, &registry.access(), &files, &mut stdout)?;
    writeln!(
        stdout,
        "{} passed, {} failed",
        outcome.passed, outcome.failed
    )?;
    Ok(if outcome.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
