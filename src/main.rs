//! The `samlgate` command line. Thin: parsing arguments, printing results.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use samlgate::check::{Decision, check_response};
use samlgate::clock::{Clock, FixedClock, SystemClock};
use samlgate::config::Config;

#[derive(Parser)]
#[command(name = "samlgate", version, about = "SAML 2.0 single-sign-on gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Decide one SAMLResponse (base64 as POSTed, or raw XML) and print JSON.
    CheckResponse {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Validate as of this instant (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<String>,
        /// Mark a request id as outstanding (repeatable).
        #[arg(long = "request-id")]
        request_id: Vec<String>,
        /// The response file, or - for standard input.
        file: String,
    },
    /// Config commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file; every error names its key.
    Check {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SAMLGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let _ = cfg;
            eprintln!(
                "samlgate serve: the gateway listeners are not built yet (issue #4); `config check` and `check-response` work"
            );
            ExitCode::from(2)
        }
        Command::CheckResponse {
            config,
            at,
            request_id,
            file,
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let clock: Box<dyn Clock> = match at {
                None => Box::new(SystemClock),
                Some(s) => match chrono::DateTime::parse_from_rfc3339(&s) {
                    Ok(t) => Box::new(FixedClock(t.with_timezone(&chrono::Utc))),
                    Err(e) => {
                        eprintln!("samlgate: --at {s:?} is not an RFC 3339 time: {e}");
                        return ExitCode::from(2);
                    }
                },
            };
            let mut input = Vec::new();
            let read = if file == "-" {
                std::io::stdin().read_to_end(&mut input).map(|_| ())
            } else {
                std::fs::File::open(&file)
                    .and_then(|mut f| f.read_to_end(&mut input))
                    .map(|_| ())
            };
            if let Err(e) = read {
                eprintln!("samlgate: cannot read {file}: {e}");
                return ExitCode::from(2);
            }
            let report = check_response(&input, &cfg, &request_id, clock.as_ref());
            match serde_json::to_string_pretty(&report) {
                Ok(json) => println!("{json}"),
                Err(e) => {
                    eprintln!("samlgate: cannot print the report: {e}");
                    return ExitCode::from(2);
                }
            }
            match report.decision {
                Decision::Accept => ExitCode::SUCCESS,
                Decision::Reject => ExitCode::from(1),
            }
        }
        Command::Config {
            command: ConfigCommand::Check { config },
        } => match load(&config) {
            Ok(cfg) => {
                println!(
                    "{}: OK (IdP {} with {} signing certificate(s); SP {}; provisioning {:?})",
                    config.display(),
                    cfg.idp.metadata.entity_id,
                    cfg.idp.metadata.signing_certs.len(),
                    cfg.sp.entity_id,
                    cfg.provisioning.mode
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("samlgate: [{}] {e}", e.code());
        ExitCode::from(2)
    })
}
