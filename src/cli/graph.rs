//! `stackyard graph`: the plan's dependency graph, waves as ranks.

use std::collections::BTreeMap;

use stackyard_api::Deployment;

use super::{CliError, CliResult, Context, Exit};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Dot,
    Mermaid,
    Text,
}

fn by_wave(d: &Deployment) -> BTreeMap<u32, Vec<&stackyard_api::DeployedArtifact>> {
    let mut waves: BTreeMap<u32, Vec<_>> = BTreeMap::new();
    for a in &d.artifacts {
        waves.entry(a.wave).or_default().push(a);
    }
    waves
}

pub fn render(d: &Deployment, format: Format) -> String {
    let mut out = Vec::new();
    match format {
        Format::Dot => {
            out.push(format!("digraph \"{}\" {{", d.selector.replace('"', "\\\"")));
            out.push("  rankdir=LR;".into());
            for (wave, artifacts) in by_wave(d) {
                let nodes: Vec<String> =
                    artifacts.iter().map(|a| format!("\"{}\"", a.artifact_key)).collect();
                out.push(format!("  {{ rank=same; /* wave {wave} */ {}; }}", nodes.join("; ")));
            }
            for a in &d.artifacts {
                out.push(format!("  \"{}\" [label=\"{}@{}\"];", a.artifact_key, a.artifact_key, a.version));
                for dep in &a.depends_on {
                    out.push(format!("  \"{dep}\" -> \"{}\";", a.artifact_key));
                }
            }
            out.push("}".into());
        }
        Format::Mermaid => {
            out.push("flowchart LR".into());
            for (wave, artifacts) in by_wave(d) {
                out.push(format!("  subgraph wave{wave}[\"wave {wave}\"]"));
                for a in artifacts {
                    out.push(format!(
                        "    {}[\"{}@{}\"]",
                        a.artifact_key.replace('-', "_"),
                        a.artifact_key,
                        a.version
                    ));
                }
                out.push("  end".into());
            }
            for a in &d.artifacts {
                for dep in &a.depends_on {
                    out.push(format!("  {} --> {}", dep.replace('-', "_"), a.artifact_key.replace('-', "_")));
                }
            }
        }
        Format::Text => {
            for (wave, artifacts) in by_wave(d) {
                out.push(format!("wave {wave}"));
                for a in artifacts {
                    let after = if a.depends_on.is_empty() {
                        String::new()
                    } else {
                        format!("  <- {}", a.depends_on.join(", "))
                    };
                    out.push(format!("  {}@{}{after}", a.artifact_key, a.version));
                }
            }
        }
    }
    out.join("\n")
}

pub async fn graph(ctx: &Context, selector: &str, format: Format) -> CliResult {
    let d = ctx
        .client
        .deployment(selector)
        .await?
        .ok_or_else(|| CliError::new(Exit::NotFound, format!("no deployment '{selector}'")))?;
    println!("{}", render(&d, format));
    Ok(())
}
