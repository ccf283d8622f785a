//! The `tributary` binary: the engine's command line with this deployment's workflows.

use std::process::ExitCode;

fn main() -> ExitCode {
    match tributary_workflows::registry() {
        Ok(registry) => tributary::cli::main(
            tributary::cli::App::new(registry)
                .setup(tributary_workflows::sources::setup)
                .command(
                    "sources",
                    "Show each ingestion source's cursor, row counts and last successful run",
                    tributary_workflows::sources::report::command,
                ),
        ),
        Err(e) => {
            eprintln!("error: invalid workflow definitions: {e}");
            ExitCode::FAILURE
        }
    }
}
