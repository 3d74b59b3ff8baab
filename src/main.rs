//! The `stackyard` command: the registry server and its command-line client
//! in one binary.

mod cli;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use cli::{CliError, CliResult, Context, Output};
use stackyard_api::ArtifactState;

const EXAMPLES: &str = "\
Examples:
  stackyard serve                                   run the registry on 127.0.0.1:8080
  stackyard package examples/packages/network -o network.tar.gz
  stackyard push network.tar.gz app.tar.gz          upload packages
  stackyard deploy prod/eu -f plan.yaml             show the diff, confirm, apply
  stackyard deploy prod/eu --add monitoring --yes   add one artifact (latest version)
  stackyard status prod/eu --watch                  follow the rollout until it ends
  stackyard graph prod/eu --format mermaid

Exit codes: 0 success, 1 the operation failed (e.g. a failed rollout), 2 usage error,
3 not found, 4 conflict or validation error, 5 server or network error, 6 not authorised.";

#[derive(Parser)]
#[command(name = "stackyard", version, about = "A registry for deployable stacks and the plans that deploy them", after_help = EXAMPLES)]
struct Cli {
    /// Registry URL [default: the profile's, else http://127.0.0.1:8080].
    #[arg(long, global = true, env = "STACKYARD_URL", value_name = "URL")]
    server: Option<String>,
    /// Bearer token [default: the profile's].
    #[arg(long, global = true, env = "STACKYARD_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Profile of the client configuration file to use (see `stackyard login`).
    #[arg(long, global = true, env = "STACKYARD_PROFILE", value_name = "NAME")]
    profile: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    output: Output,
    /// Print only results: no progress or information lines.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Say which server and profile are used.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry's HTTP API.
    ///
    /// With no configuration it keeps its metadata in an SQLite file and the
    /// packages on local disk, both under ./stackyard-data, created on first
    /// start. To run several replicas, point them all at one PostgreSQL
    /// (--database-url), one S3-compatible bucket (--blob-store, --s3-endpoint,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION) and, for events,
    /// NATS JetStream (--nats-url) or webhooks (in the file). Each flag can
    /// also be set through the environment variable shown, or in the TOML
    /// file given with --config; flags win over the environment, which wins
    /// over the file.
    #[command(
        after_help = "Examples:\n  stackyard serve\n  stackyard serve --listen 0.0.0.0:8080 --public-url https://stackyard.example.com\n  STACKYARD_DATA_DIR=/var/lib/stackyard stackyard serve --log-format json\n  STACKYARD_DATABASE_URL=postgres://stackyard@db/stackyard STACKYARD_BLOB_STORE=s3://packages/stackyard \\\n    STACKYARD_S3_ENDPOINT=http://minio:9000 STACKYARD_NATS_URL=nats://nats:4222 stackyard serve --listen 0.0.0.0:8080"
    )]
    Serve(serve::ServeArgs),
    /// Print the OpenAPI document of the HTTP API (as served at /openapi.json).
    Openapi,
    /// Save a server URL and token as a named profile.
    #[command(
        after_help = "Example:\n  stackyard login --server https://stackyard.example.com --token $TOKEN --name prod"
    )]
    Login {
        /// Profile name.
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// Build a package (.tar.gz, .tgz, .tar or .zip) from a folder holding a manifest.
    #[command(after_help = "Example:\n  stackyard package examples/packages/network -o network.tar.gz")]
    Package {
        /// The folder: manifest.yaml, manifest.yml or manifest.json at its root.
        dir: PathBuf,
        /// The package to write; its extension picks the format.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
    /// Upload packages through presigned URLs (ours or an object store's).
    #[command(
        after_help = "Examples:\n  stackyard push network.tar.gz database.tar.gz\n  stackyard push app.zip --sha256 3f2a... --label team=web"
    )]
    Push {
        #[arg(required = true)]
        packages: Vec<PathBuf>,
        /// Expected SHA-256 (hex) of the single package; checked before uploading.
        #[arg(long)]
        sha256: Option<String>,
        /// Label added to the version, name=value; repeatable.
        #[arg(long = "label", value_name = "NAME=VALUE")]
        labels: Vec<String>,
        /// Upload with a presigned PUT instead of a multipart POST.
        #[arg(long)]
        put: bool,
    },
    /// Artifacts and their versions.
    #[command(subcommand)]
    Artifacts(ArtifactsCommand),
    /// Create or change a deployment's plan: shows the diff, asks, applies.
    ///
    /// The change is applied only if the deployment is still at the revision
    /// the diff was computed against (If-Match); otherwise nothing changes and
    /// the command exits with 4. Without a terminal, --yes is required.
    #[command(
        after_help = "Examples:\n  stackyard deploy prod/eu -f plan.yaml\n  stackyard deploy prod/eu --add app@3 --remove legacy --yes\n  stackyard deploy prod/eu -f plan.yaml --dry-run           # review: prints the status id it is based on\n  stackyard deploy prod/eu -f plan.yaml --yes --if-match ID # apply only that reviewed diff\n\nA plan file (YAML or JSON):\n  organization: acme\n  artifacts:\n    - key: network\n      version: 2\n    - key: app           # no version: the latest, pinned at this moment"
    )]
    Deploy {
        selector: String,
        /// Plan file (YAML or JSON) replacing the whole plan.
        #[arg(short = 'f', long = "file", value_name = "PLAN")]
        file: Option<PathBuf>,
        /// Add or re-pin an artifact: KEY or KEY@VERSION; repeatable.
        #[arg(long, value_name = "KEY[@VERSION]")]
        add: Vec<String>,
        /// Remove an artifact; repeatable.
        #[arg(long, value_name = "KEY")]
        remove: Vec<String>,
        /// Set the organization.
        #[arg(long)]
        org: Option<String>,
        /// Only show the diff.
        #[arg(long)]
        dry_run: bool,
        /// Apply without asking.
        #[arg(short, long)]
        yes: bool,
        /// Apply only if the deployment is at this status id (from an earlier --dry-run).
        #[arg(long, value_name = "STATUS_ID")]
        if_match: Option<String>,
    },
    /// Show a deployment's current plan.
    Get { selector: String },
    /// List deployments, optionally filtered (filters combine; values within one are alternatives).
    Ls {
        #[arg(long = "selector")]
        selectors: Vec<String>,
        #[arg(long = "artifact")]
        artifacts: Vec<String>,
        #[arg(long = "org")]
        orgs: Vec<String>,
    },
    /// List a deployment's revisions, newest first.
    History { selector: String },
    /// Remove a deployment (its history stays).
    Rm {
        selector: String,
        #[arg(short, long)]
        yes: bool,
    },
    /// Show a revision's rollout, grouped by wave; --watch follows it to the end.
    ///
    /// Exits 0 when the rollout succeeded (or, without --watch, is still
    /// going), 1 when it failed or was superseded.
    #[command(
        after_help = "Examples:\n  stackyard status prod/eu\n  stackyard status prod/eu 3730ade13f5c3a263f085e773e8893c7 --watch"
    )]
    Status {
        selector: String,
        /// A revision's status id [default: the current revision].
        status_id: Option<String>,
        #[arg(short, long)]
        watch: bool,
        /// Seconds between refreshes with --watch.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
    },
    /// Report an artifact's state, as a deployment engine does.
    #[command(
        after_help = "Example:\n  stackyard report prod/eu 3730ade1... network succeeded -m 'vpc-0a1b2c'"
    )]
    Report {
        selector: String,
        status_id: String,
        artifact_key: String,
        #[arg(value_enum)]
        state: StateArg,
        #[arg(short, long)]
        message: Option<String>,
    },
    /// Ask deployment engines to deploy one artifact of the current revision again.
    Trigger { selector: String, artifact_key: String },
    /// Print a deployment's dependency graph, waves as ranks.
    Graph {
        selector: String,
        #[arg(long, value_enum, default_value = "text")]
        format: cli::graph::Format,
    },
    /// API tokens: create, list, revoke (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Administration straight on the data dir, without the server.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Print shell completions.
    #[command(after_help = "Example:\n  stackyard completions bash > /etc/bash_completion.d/stackyard")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args)]
struct NewToken {
    /// What the token is for.
    #[arg(long)]
    name: String,
    /// reader, publisher, deployer, admin or engine.
    #[arg(long)]
    role: String,
    /// Limit it to deployments of this organization; repeatable.
    #[arg(long = "org")]
    orgs: Vec<String>,
    /// Limit it to selectors matching this glob (* and ?); repeatable.
    #[arg(long = "selector")]
    selectors: Vec<String>,
    /// Seconds until it expires [default: never].
    #[arg(long)]
    expires_in: Option<u64>,
}

impl NewToken {
    fn request(self) -> stackyard_api::TokenRequest {
        cli::token::request(self.name, self.role, self.orgs, self.selectors, self.expires_in)
    }
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; its secret is shown once.
    #[command(
        after_help = "Examples:\n  stackyard token create --name ci --role publisher\n  stackyard token create --name eu-engine --role engine --selector 'prod/eu-*' --expires-in 2592000"
    )]
    Create(NewToken),
    /// List tokens (never their secrets).
    Ls,
    /// Revoke a token at once.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Tokens, written straight into the database (e.g. when every admin token is lost).
    #[command(subcommand)]
    Token(AdminTokenCommand),
}

#[derive(Subcommand)]
enum AdminTokenCommand {
    /// Create a token in the data dir's database; the server need not run.
    #[command(
        after_help = "Example:\n  stackyard admin token create --name recovery --role admin --data-dir /var/lib/stackyard"
    )]
    Create {
        #[command(flatten)]
        token: NewToken,
        #[arg(long, env = "STACKYARD_DATA_DIR", default_value = "./stackyard-data")]
        data_dir: PathBuf,
        /// The database, when not the data dir's SQLite file: sqlite://PATH or postgres://...
        #[arg(long, env = "STACKYARD_DATABASE_URL", value_name = "URL", hide_env_values = true)]
        database_url: Option<stackyard_server::storage::DatabaseUrl>,
    },
}

#[derive(Subcommand)]
enum ArtifactsCommand {
    /// List artifacts.
    Ls {
        #[arg(long)]
        prefix: Option<String>,
        /// name=value; repeatable.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Describe an artifact and its latest version.
    Show { key: String },
    /// List an artifact's versions, newest first.
    Versions { key: String },
    /// Download a package: KEY (latest) or KEY@VERSION.
    Download {
        spec: String,
        /// Where to write it [default: KEY-VERSION.FORMAT].
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
    },
    /// Delete one version: KEY@VERSION.
    Rm { spec: String },
    /// What depends on an artifact: other artifacts and deployments.
    Dependents { key: String },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StateArg {
    Pending,
    #[value(name = "in_progress")]
    InProgress,
    Succeeded,
    Failed,
}

impl From<StateArg> for ArtifactState {
    fn from(s: StateArg) -> Self {
        match s {
            StateArg::Pending => Self::Pending,
            StateArg::InProgress => Self::InProgress,
            StateArg::Succeeded => Self::Succeeded,
            StateArg::Failed => Self::Failed,
        }
    }
}

/// mimalloc: request handling allocates many small, short-lived values
/// (JSON documents, rows), which glibc's allocator serves slowly across threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => match serve::serve(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Openapi => {
            println!(
                "{}",
                serde_json::to_string_pretty(&stackyard_server::openapi()).expect("the document serialises")
            );
            ExitCode::SUCCESS
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "stackyard", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        _ => {
            let runtime = tokio::runtime::Runtime::new().expect("an async runtime");
            match runtime.block_on(client_command(cli)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {}", e.message);
                    for item in &e.items {
                        eprintln!("  - {item}");
                    }
                    ExitCode::from(e.exit as u8)
                }
            }
        }
    }
}

async fn client_command(cli: Cli) -> CliResult {
    let (server, token) =
        cli::profile::resolve(cli.server.clone(), cli.token.clone(), cli.profile.as_deref())?;
    let ctx = Context {
        client: stackyard_client::Client::new(&server, token.clone()),
        output: cli.output,
        quiet: cli.quiet,
        verbose: cli.verbose,
    };
    if ctx.verbose {
        eprintln!(
            "server {server}{}",
            cli.profile.as_deref().map(|p| format!(" (profile {p})")).unwrap_or_default()
        );
    }
    match cli.command {
        Command::Login { name } => cli::profile::login(&ctx, &name, &server, token).await,
        Command::Package { dir, file } => cli::package::package(&ctx, &dir, &file),
        Command::Push { packages, sha256, labels, put } => {
            cli::push::push(&ctx, cli::push::PushArgs { packages, sha256, labels, put }).await
        }
        Command::Artifacts(command) => match command {
            ArtifactsCommand::Ls { prefix, labels } => {
                cli::artifacts::list(&ctx, prefix.as_deref(), &labels).await
            }
            ArtifactsCommand::Show { key } => cli::artifacts::show(&ctx, &key).await,
            ArtifactsCommand::Versions { key } => cli::artifacts::versions(&ctx, &key).await,
            ArtifactsCommand::Download { spec, file } => cli::artifacts::download(&ctx, &spec, file).await,
            ArtifactsCommand::Rm { spec } => cli::artifacts::remove(&ctx, &spec).await,
            ArtifactsCommand::Dependents { key } => cli::artifacts::dependents(&ctx, &key).await,
        },
        Command::Deploy { selector, file, add, remove, org, dry_run, yes, if_match } => {
            let args = cli::deploy::DeployArgs {
                selector: &selector,
                file: file.as_deref(),
                add: &add,
                remove: &remove,
                organization: org,
                dry_run,
                yes,
                if_match,
            };
            cli::deploy::deploy(&ctx, args).await
        }
        Command::Get { selector } => cli::deploy::get(&ctx, &selector).await,
        Command::Ls { selectors, artifacts, orgs } => {
            cli::deploy::list(&ctx, &selectors, &artifacts, &orgs).await
        }
        Command::History { selector } => cli::deploy::history(&ctx, &selector).await,
        Command::Rm { selector, yes } => cli::deploy::remove(&ctx, &selector, yes).await,
        Command::Status { selector, status_id, watch, interval } => {
            if interval.is_nan() || interval <= 0.0 {
                return Err(CliError::usage("--interval must be a positive number of seconds"));
            }
            cli::status::status(&ctx, &selector, status_id, watch, interval).await
        }
        Command::Report { selector, status_id, artifact_key, state, message } => {
            cli::status::report(&ctx, &selector, &status_id, &artifact_key, state.into(), message).await
        }
        Command::Trigger { selector, artifact_key } => {
            cli::status::trigger(&ctx, &selector, &artifact_key).await
        }
        Command::Token(command) => match command {
            TokenCommand::Create(token) => cli::token::create(&ctx, token.request()).await,
            TokenCommand::Ls => cli::token::list(&ctx).await,
            TokenCommand::Revoke { id } => cli::token::revoke(&ctx, &id).await,
        },
        Command::Admin(AdminCommand::Token(AdminTokenCommand::Create { token, data_dir, database_url })) => {
            cli::token::create_offline(&ctx, &data_dir, database_url, token.request()).await
        }
        Command::Graph { selector, format } => cli::graph::graph(&ctx, &selector, format).await,
        Command::Serve(_) | Command::Openapi | Command::Completions { .. } => {
            unreachable!("handled before the runtime starts")
        }
    }
}
