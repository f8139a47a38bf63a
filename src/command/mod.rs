//! One module per command, as kwctl's `command` is laid out; `execute` picks one.

mod annotate;
mod bench;
mod explain;
mod export;
mod registry;
mod rollout;
mod run;
mod scaffold;
mod serve;
mod test;

use std::process::ExitCode;

use crate::cli::Command;

pub fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => run::run(args),
        Command::Review(args) => run::review(args),
        Command::Explain(args) => explain::explain(args),
        Command::Test(args) => test::test(args),
        Command::Annotate(args) => annotate::annotate(args),
        Command::Inspect(args) => annotate::inspect(args),
        Command::Push(args) => registry::push(args),
        Command::Pull(args) => registry::pull(args),
        Command::Bench(args) => bench::bench(args),
        Command::Serve(args) => serve::serve(args),
        Command::Playground(args) => {
            sidecarctl::playground::serve(&args.dir, args.addr, |addr| {
                println!("playground: http://{addr}/");
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Scaffold(command) => scaffold::scaffold(command),
        Command::Rollout(args) => rollout::rollout(args),
        Command::Export(crate::cli::Export::MutatingAdmissionPolicy(args)) => {
            export::mutating_admission_policy(args)
        }
    }
}
