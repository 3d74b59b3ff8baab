//! Finishing touches on the generated OpenAPI document, applied in one place
//! so every route gets them: the answers any route may give (401 for a bad
//! token, 403 for a role too small, 415 for a JSON body sent as something
//! else, 429 past the rate limit, 503 while a dependency is down), and the
//! formats of the parameters every route shares by name.

use serde_json::{Value, json};

/// Parameter formats by name; they are the same wherever the name appears.
fn parameter_schema(name: &str) -> Option<Value> {
    Some(match name {
        "artifact_key" => json!({"type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$", "maxLength": 128}),
        "version" => json!({"type": "string", "pattern": "^([1-9][0-9]{0,17}|sha256:[0-9a-fA-F]{64})$"}),
        "selector" => {
            json!({"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^,\\u0000-\\u001f\\u007f-\\u009f]+$"})
        }
        "status_id" | "upload_id" => json!({"type": "string", "pattern": "^[0-9a-f]{32}$"}),
        "limit" => json!({"type": "integer", "minimum": 1}),
        "label" => json!({"type": "array", "items": {"type": "string", "pattern": "^[^=]+="}}),
        "prefix" => json!({"type": "string", "pattern": "^[a-z0-9-]*$"}),
        // Comma lists: items may be padded with spaces, empty items are ignored.
        "organization" => comma_list("[A-Za-z0-9._-]{1,64}"),
        "artifact_keys" => comma_list("[a-z0-9]+(-[a-z0-9]+)*"),
        _ => return None,
    })
}

fn comma_list(item: &str) -> Value {
    let padded = format!("\\s*({item})?\\s*");
    json!({"type": "string", "pattern": format!("^{padded}(,{padded})*$")})
}

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}

pub fn finish(doc: utoipa::openapi::OpenApi) -> Value {
    let mut value = serde_json::to_value(&doc).expect("the document serialises");
    if let Some(paths) = value["paths"].as_object_mut() {
        for operations in paths.values_mut().filter_map(Value::as_object_mut) {
            for operation in operations.values_mut().filter_map(Value::as_object_mut) {
                let secured = operation.get("security").is_some();
                let takes_json = operation
                    .get("requestBody")
                    .and_then(|body| body["content"].as_object())
                    .is_some_and(|content| content.contains_key("application/json"));
                if let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) {
                    responses
                        .entry("401")
                        .or_insert_with(|| problem("No token, or a bad, revoked or expired one"));
                    if secured {
                        responses
                            .entry("403")
                            .or_insert_with(|| problem("The token's role does not allow this"));
                    }
                    if takes_json {
                        responses.entry("415").or_insert_with(|| {
                            problem("The body is not sent as JSON (`Content-Type: application/json`)")
                        });
                    }
                    responses
                        .entry("429")
                        .or_insert_with(|| problem("Too many requests for this token; see Retry-After"));
                    responses.entry("503").or_insert_with(|| {
                        problem("The database or the package store is unavailable for now; see Retry-After")
                    });
                }
                for parameter in
                    operation.get_mut("parameters").and_then(Value::as_array_mut).into_iter().flatten()
                {
                    if let Some(schema) = parameter["name"].as_str().and_then(parameter_schema) {
                        parameter["schema"] = schema;
                    }
                }
            }
        }
    }
    value
}
