//! The client side of the `stackyard` command: global options, profiles,
//! output formats and exit codes shared by every verb.

pub mod artifacts;
pub mod deploy;
pub mod graph;
pub mod package;
pub mod profile;
pub mod push;
pub mod status;
pub mod token;

use std::io::IsTerminal;

use serde::Serialize;
use serde_json::Value;
use stackyard_client::{Client, ClientError};

/// Exit codes scripts can rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The operation ran and reported failure (a failed rollout, say).
    Failed = 1,
    /// The command line or an input file is wrong (clap also uses 2).
    Usage = 2,
    NotFound = 3,
    /// The request conflicts with the current state or breaks a rule (400, 409, 412, 413, 415, 422).
    Conflict = 4,
    /// The server failed or could not be reached.
    Server = 5,
    /// Missing, bad or insufficient credentials.
    Auth = 6,
}

/// An error to print and exit with.
#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
    /// One line per problem the server listed.
    pub items: Vec<String>,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self { exit, message: message.into(), items: Vec::new() }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Api { status, problem } => {
                let exit = match status.as_u16() {
                    401 | 403 => Exit::Auth,
                    404 => Exit::NotFound,
                    400..=499 => Exit::Conflict,
                    _ => Exit::Server,
                };
                Self {
                    exit,
                    message: problem.detail.clone(),
                    items: problem.errors.iter().map(describe_problem).collect(),
                }
            }
            ClientError::Network(e) => Self::new(Exit::Server, format!("cannot reach the server: {e}")),
            ClientError::Protocol(e) => {
                Self::new(Exit::Server, format!("unexpected answer from the server: {e}"))
            }
            ClientError::Io(e) => Self::new(Exit::Failed, e.to_string()),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        Self::new(Exit::Failed, e.to_string())
    }
}

/// One item of a problem's `errors`, in plain words.
fn describe_problem(item: &Value) -> String {
    let s = |k: &str| item[k].as_str().unwrap_or("?").to_string();
    let list = |k: &str| {
        item[k]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    match item["code"].as_str().unwrap_or("") {
        "missing_dependency" => {
            format!("{} needs {}, which is not in the plan", s("artifact_key"), s("dependency"))
        }
        "dependency_cycle" => format!("dependency cycle: {}", list("cycle").replace(", ", " -> ")),
        "unknown_artifact" => format!("there is no artifact {}", s("artifact_key")),
        "unknown_version" => format!("{} has no version {}", s("artifact_key"), s("version")),
        "duplicate_artifact" => format!("{} is in the plan twice", s("artifact_key")),
        "has_dependents" => format!("{} is needed by {}", s("artifact_key"), list("dependents")),
        "dependency_not_succeeded" => format!("{} has not succeeded yet", s("dependency")),
        "version_in_use" => format!("the current plan of {} uses it", list("selectors")),
        _ => match (item["field"].as_str(), item["detail"].as_str()) {
            (_, Some(detail)) => detail.to_string(),
            _ => item.to_string(),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

/// What every verb gets: the client and how to talk to the user.
pub struct Context {
    pub client: Client,
    pub output: Output,
    pub quiet: bool,
    pub verbose: bool,
}

impl Context {
    /// Prints `value` as JSON or YAML, or as the human rendering `table` makes.
    pub fn emit<T: Serialize>(&self, value: &T, table: impl FnOnce(&T) -> String) -> CliResult {
        let text = match self.output {
            Output::Json => serde_json::to_string_pretty(value).expect("serialisable"),
            Output::Yaml => serde_norway::to_string(value).expect("serialisable").trim_end().to_string(),
            Output::Table => table(value),
        };
        if !text.is_empty() {
            println!("{text}");
        }
        Ok(())
    }

    /// A progress or status line for humans; silent with `--quiet` or machine output.
    pub fn info(&self, line: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", line.as_ref());
        }
    }

    /// Whether a person is watching stdout (progress bars, live views).
    pub fn interactive(&self) -> bool {
        std::io::stdout().is_terminal() && self.output == Output::Table && !self.quiet
    }
}

/// Left-aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> =
            cells.iter().enumerate().map(|(i, c)| format!("{c:<width$}", width = widths[i])).collect();
        padded.join("  ").trim_end().to_string()
    };
    std::iter::once(line(headers.iter().map(|h| h.to_string()).collect()))
        .chain(rows.iter().map(|r| line(r.clone())))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asks a yes/no question on the terminal; refuses to guess without one.
pub fn confirm(question: &str, yes: bool) -> CliResult<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage("not a terminal: add --yes to go ahead without confirming"));
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// `KEY` or `KEY@VERSION`.
pub fn split_version(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once('@') {
        Some((key, version)) => (key, Some(version)),
        None => (spec, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_read_as_sentences() {
        let item = serde_json::json!({"code": "dependency_cycle", "cycle": ["a", "b", "a"]});
        assert_eq!(describe_problem(&item), "dependency cycle: a -> b -> a");
        let item =
            serde_json::json!({"code": "missing_dependency", "artifact_key": "app", "dependency": "db"});
        assert_eq!(describe_problem(&item), "app needs db, which is not in the plan");
    }

    #[test]
    fn tables_align() {
        assert_eq!(table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]), "A    BB\nxyz  1");
    }
}
