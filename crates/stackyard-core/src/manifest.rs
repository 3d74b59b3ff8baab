//! The package manifest: which stack a package deploys and what it needs first.
//!
//! Validation collects every problem it finds, so a user fixes a manifest in
//! one round trip instead of one error at a time.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::key::ArtifactKey;

/// A validated manifest. `raw` keeps every field, known or not, as uploaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub stack_name: String,
    pub artifact_key: ArtifactKey,
    /// The dependencies as artifact keys, de-duplicated, in manifest order.
    pub depends_on: Vec<ArtifactKey>,
    pub description: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub raw: Value,
}

/// Which syntax a manifest file uses, from its file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestSyntax {
    Yaml,
    Json,
}

/// One problem with a manifest, naming the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldProblem {
    pub code: &'static str,
    pub field: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is not valid {syntax}: {detail}")]
    Syntax { syntax: &'static str, detail: String },
    #[error("the manifest must be a mapping of fields, not {found}")]
    NotAMapping { found: &'static str },
    #[error("the manifest has {} invalid field(s): {}", .0.len(), describe(.0))]
    Fields(Vec<FieldProblem>),
}

fn describe(problems: &[FieldProblem]) -> String {
    problems.iter().map(|p| p.detail.as_str()).collect::<Vec<_>>().join("; ")
}

impl Manifest {
    /// Parses and validates manifest bytes.
    pub fn parse(bytes: &[u8], syntax: ManifestSyntax) -> Result<Self, ManifestError> {
        let raw: Value = match syntax {
            ManifestSyntax::Json => serde_json::from_slice(bytes)
                .map_err(|e| ManifestError::Syntax { syntax: "JSON", detail: e.to_string() })?,
            ManifestSyntax::Yaml => serde_norway::from_slice(bytes)
                .map_err(|e| ManifestError::Syntax { syntax: "YAML", detail: e.to_string() })?,
        };
        let Value::Object(fields) = &raw else {
            return Err(ManifestError::NotAMapping { found: json_kind(&raw) });
        };

        let mut problems = Vec::new();
        let stack_name = stack_name(fields, &mut problems);
        let depends_on = depends_on(fields, &mut problems);
        let description = optional_string(fields, "description", &mut problems);
        let labels = labels(fields, &mut problems);

        match stack_name {
            Some((stack_name, artifact_key)) if problems.is_empty() => {
                Ok(Self { stack_name, artifact_key, depends_on, description, labels, raw })
            }
            _ => Err(ManifestError::Fields(problems)),
        }
    }
}

fn stack_name(
    fields: &Map<String, Value>,
    problems: &mut Vec<FieldProblem>,
) -> Option<(String, ArtifactKey)> {
    let problem = |code, detail: String| FieldProblem { code, field: "stack_name".into(), detail };
    match fields.get("stack_name") {
        None | Some(Value::Null) => {
            problems.push(problem("missing_field", "stack_name is required".into()));
            None
        }
        Some(Value::String(name)) if name.trim().is_empty() => {
            problems.push(problem("empty_stack_name", "stack_name must not be empty".into()));
            None
        }
        Some(Value::String(name)) => match ArtifactKey::from_stack_name(name) {
            Ok(key) => Some((name.clone(), key)),
            Err(e) => {
                problems.push(problem("invalid_stack_name", format!("stack_name '{name}': {e}")));
                None
            }
        },
        Some(other) => {
            let detail = format!("stack_name must be a string, not {}", json_kind(other));
            problems.push(problem("invalid_type", detail));
            None
        }
    }
}

fn depends_on(fields: &Map<String, Value>, problems: &mut Vec<FieldProblem>) -> Vec<ArtifactKey> {
    let items = match fields.get("depends_on") {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => {
            problems.push(FieldProblem {
                code: "invalid_type",
                field: "depends_on".into(),
                detail: format!("depends_on must be a list of strings, not {}", json_kind(other)),
            });
            return Vec::new();
        }
    };
    let mut keys: Vec<ArtifactKey> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("depends_on[{i}]");
        match item {
            Value::String(name) => match ArtifactKey::from_stack_name(name) {
                Ok(key) if !keys.contains(&key) => keys.push(key),
                Ok(_) => {}
                Err(e) => problems.push(FieldProblem {
                    code: "invalid_dependency",
                    detail: format!("{field} '{name}': {e}"),
                    field,
                }),
            },
            other => problems.push(FieldProblem {
                code: "invalid_type",
                detail: format!("{field} must be a string, not {}", json_kind(other)),
                field,
            }),
        }
    }
    keys
}

fn optional_string(
    fields: &Map<String, Value>,
    name: &str,
    problems: &mut Vec<FieldProblem>,
) -> Option<String> {
    match fields.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            problems.push(FieldProblem {
                code: "invalid_type",
                field: name.into(),
                detail: format!("{name} must be a string, not {}", json_kind(other)),
            });
            None
        }
    }
}

fn labels(fields: &Map<String, Value>, problems: &mut Vec<FieldProblem>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    match fields.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                match v {
                    Value::String(s) => {
                        labels.insert(k.clone(), s.clone());
                    }
                    // Plain YAML scalars (`tier: 1`, `public: true`) are meant as strings.
                    Value::Number(_) | Value::Bool(_) => {
                        labels.insert(k.clone(), v.to_string());
                    }
                    other => problems.push(FieldProblem {
                        code: "invalid_type",
                        field: format!("labels.{k}"),
                        detail: format!("labels.{k} must be a string, not {}", json_kind(other)),
                    }),
                }
            }
        }
        Some(other) => problems.push(FieldProblem {
            code: "invalid_type",
            field: "labels".into(),
            detail: format!("labels must be a mapping of strings, not {}", json_kind(other)),
        }),
    }
    labels
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(s.as_bytes(), ManifestSyntax::Yaml)
    }

    #[test]
    fn parses_a_full_manifest_and_keeps_unknown_fields() {
        let m = yaml(
            "stack_name: App Server\ndepends_on: [Network Core, iam-baseline, network-core]\n\
             description: the app\nlabels: {team: web, tier: 1}\nparameters: {replicas: 3}\nx-extra: kept\n",
        )
        .unwrap();
        assert_eq!(m.stack_name, "App Server");
        assert_eq!(m.artifact_key.as_str(), "app-server");
        let deps: Vec<_> = m.depends_on.iter().map(|k| k.as_str()).collect();
        assert_eq!(deps, ["network-core", "iam-baseline"]);
        assert_eq!(m.labels["tier"], "1");
        assert_eq!(m.raw["x-extra"], "kept");
        assert_eq!(m.raw["parameters"]["replicas"], 3);
    }

    #[test]
    fn parses_json() {
        let m = Manifest::parse(br#"{"stack_name":"db"}"#, ManifestSyntax::Json).unwrap();
        assert_eq!(m.artifact_key.as_str(), "db");
        assert!(m.depends_on.is_empty());
    }

    #[test]
    fn reports_every_bad_field_at_once() {
        let Err(ManifestError::Fields(problems)) = yaml("depends_on: [ok, 3, '--']\nlabels: [a]\n") else {
            panic!("expected field problems");
        };
        let fields: Vec<_> = problems.iter().map(|p| (p.code, p.field.as_str())).collect();
        assert_eq!(
            fields,
            [
                ("missing_field", "stack_name"),
                ("invalid_type", "depends_on[1]"),
                ("invalid_dependency", "depends_on[2]"),
                ("invalid_type", "labels"),
            ]
        );
    }

    #[test]
    fn rejects_empty_and_keyless_stack_names() {
        for (doc, code) in [
            ("stack_name: ''", "empty_stack_name"),
            ("stack_name: '  '", "empty_stack_name"),
            ("stack_name: '***'", "invalid_stack_name"),
            ("stack_name: 42", "invalid_type"),
        ] {
            let Err(ManifestError::Fields(p)) = yaml(doc) else { panic!("{doc}") };
            assert_eq!(p[0].code, code, "{doc}");
        }
    }

    #[test]
    fn keeps_self_dependencies_for_the_plan_check_to_report() {
        let m = yaml("stack_name: net\ndepends_on: [NET]").unwrap();
        assert_eq!(m.depends_on, std::slice::from_ref(&m.artifact_key));
    }

    #[test]
    fn rejects_bad_syntax_and_non_mappings() {
        assert!(matches!(yaml("stack_name: [unclosed"), Err(ManifestError::Syntax { .. })));
        assert!(matches!(yaml("- a\n- b"), Err(ManifestError::NotAMapping { found: "a list" })));
        assert!(matches!(
            Manifest::parse(b"{", ManifestSyntax::Json),
            Err(ManifestError::Syntax { syntax: "JSON", .. })
        ));
    }
}
