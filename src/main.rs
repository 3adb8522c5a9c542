//! The `vidpipe` binary: parses the command line, starts what it names, and
//! turns errors into a message and an exit code.

use clap::Parser;
use tokio_util::sync::CancellationToken;
use vidpipe::config::{Cli, Command, Config, LogFormat};
use vidpipe::operator::{self, CommandError};
use vidpipe::startup::{self, Application, Role};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "vidpipe=info,tower_http=warn".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        // One object per line; span fields flattened so ids are top-level.
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
    }
    let result: Result<(), CommandError> = match cli.command {
        Command::Serve(args) => serve(args, Role::Serve).await.map_err(Into::into),
        Command::Api(args) => serve(args, Role::Api).await.map_err(Into::into),
        Command::Worker(args) => serve(args, Role::Worker).await.map_err(Into::into),
        Command::Transcode(args) => startup::transcode_file(args).await.map_err(Into::into),
        Command::Queue { action, output, target } => operator::queue_command(action, output.json, target).await,
        Command::Lectures { action, output, target } => operator::lectures_command(action, output.json, target).await,
        Command::Webhooks { action, output, database } => {
            operator::webhooks_command(action, output.json, database).await
        }
        Command::Keys { action, output, database } => operator::keys_command(action, output.json, database).await,
        Command::Doctor { output, service } => operator::doctor(output.json, service).await,
        Command::Healthcheck { url } => operator::healthcheck(&url).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Into a buffer first: clap_complete panics on a closed pipe (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut vidpipe::config::Cli::command(), "vidpipe", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script).or_else(|e| match e.kind() {
                std::io::ErrorKind::BrokenPipe => Ok(()),
                _ => Err(CommandError::Failed(format!("writing the completions: {e}"))),
            })
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::from(error.exit_code())
        }
    }
}

async fn serve(args: vidpipe::config::ServiceArgs, role: Role) -> Result<(), String> {
    let config = Config::from_args(args).map_err(|e| e.to_string())?;
    let app = Application::build(config, role).await.map_err(|e| e.to_string())?;
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        startup::shutdown_signal().await;
        // Cancel first: logging can fail (a closed stderr) and must not
        // stand between a signal and the shutdown.
        trigger.cancel();
        tracing::info!("shutdown requested");
    });
    app.run_until_stopped(shutdown).await.map_err(|e| e.to_string())
}
