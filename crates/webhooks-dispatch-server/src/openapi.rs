//! The OpenAPI 3.1 description of the HTTP API, hand-written in `openapi.json` and embedded in the binary.
//!
//! Hand-written rather than generated so it can say what matters to a client (the secret is returned once,
//! 201 vs 200 on replay, error codes) without annotating every type. The test below keeps it in step with
//! the router: every route in [`crate::api::routes`] is documented with the same method and security, and
//! the document describes no route the router lacks.

/// The document served at `/openapi.json`.
pub const DOCUMENT: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use crate::api::routes;

    fn document() -> Value {
        serde_json::from_str(super::DOCUMENT).expect("openapi.json is valid JSON")
    }

    #[test]
    fn document_is_openapi_3_1() {
        let doc = document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert!(doc["components"]["securitySchemes"]["apiKey"].is_object());
    }

    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let doc = document();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                if method == "parameters" {
                    continue;
                }
                // An operation is protected iff it names the apiKey scheme (explicitly or via the default)
                // and offers no anonymous alternative (an empty requirement, `{}`: /metrics, whose key is a
                // setting).
                let security = operation.get("security").unwrap_or(&doc["security"]);
                let protected = security.as_array().is_some_and(|list| {
                    list.iter().any(|s| s.get("apiKey").is_some())
                        && !list.iter().any(|s| s.as_object().is_some_and(|o| o.is_empty()))
                });
                documented.insert((method.to_uppercase(), path.clone(), protected));
            }
        }
        let served: BTreeSet<_> = routes()
            .into_iter()
            .map(|r| (r.method.to_string(), r.path.to_owned(), r.protected))
            .collect();
        assert_eq!(
            served, documented,
            "router (left) and openapi.json (right) differ"
        );
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.strip_prefix('#').expect("local reference");
            assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
        }
    }

    fn collect_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(s)) => out.push(s.clone()),
                        _ => collect_refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
}
