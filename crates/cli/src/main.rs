//! `recstream`: movie recommendations kept fresh on a Kafka stream.
//!
//! The binary only parses arguments and wires the libraries together: the
//! recommender core (`recstream-core`) trains, evaluates and scores; the data
//! fetcher (`recstream-datasets`) downloads MovieLens; each subcommand lives
//! in its own module under `commands/`.

mod args;
mod commands;
mod output;
mod progress;
mod streams;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Movie recommendations kept fresh on a Kafka stream.
///
/// `recstream run` starts the whole service (on an embedded broker unless
/// --brokers is given); `serve` is the worker alone; the other commands
/// fetch data, train, evaluate and inspect the surprise-compatible SVD model.
#[derive(Debug, Parser)]
#[command(name = "recstream", version, about, long_about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: broker (embedded unless --brokers), model, worker; --demo sends sample requests.
    Run(commands::run::RunArgs),
    /// Run the worker on an existing Kafka cluster: requests in, recommendations out.
    Serve(commands::serve::ServeArgs),
    /// Learn from a ratings topic online and publish the model updates to every worker.
    Learn(commands::learn::LearnArgs),
    /// Write messages to a topic: stdin lines, or generated requests with --uids.
    Produce(commands::tools::ProduceArgs),
    /// Print the messages of a topic.
    Consume(commands::tools::ConsumeArgs),
    /// Fetch MovieLens 100K or generate synthetic ratings.
    Data(commands::data::DataArgs),
    /// Train a model on a ratings file and save it.
    Train(commands::train::TrainArgs),
    /// Train a new batch model on a base file plus the ratings topic, and publish it; once or --every DURATION.
    Retrain(commands::retrain::RetrainArgs),
    /// Top movies for one user.
    Recommend(commands::recommend::RecommendArgs),
    /// Cross-validate, or train on one file and test on another.
    Eval(commands::eval::EvalArgs),
    /// Inspect model files, or publish one to running workers.
    Model(commands::model::ModelArgs),
    /// Benchmarks: training speed and memory, top-N latency.
    Bench(commands::bench::BenchArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(commands::generate::CompletionsArgs),
    /// Print the man page (roff), or write one page per subcommand with --dir.
    Man(commands::generate::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        Command::Run(args) => commands::run::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Learn(args) => commands::learn::run(args),
        Command::Produce(args) => commands::tools::produce(args),
        Command::Consume(args) => commands::tools::consume(args),
        Command::Data(args) => commands::data::run(args),
        Command::Train(args) => commands::train::run(args),
        Command::Retrain(args) => commands::retrain::run(args),
        Command::Recommend(args) => commands::recommend::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Model(args) => commands::model::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Completions(args) => commands::generate::completions(args, Cli::command()),
        Command::Man(args) => commands::generate::man(args, Cli::command()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader closed the pipe (`| head -1`): that is not a failure.
        Err(error) if output::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", output::one_line(&error));
            ExitCode::FAILURE
        }
    }
}
