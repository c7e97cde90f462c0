//! `docs/configuration.md` checked against the typed configuration, so the
//! reference cannot drift: every key of [`Config`] has a row, every row
//! names a key, and each default the table states is the code's default.
//!
//! The table's first column holds one or more keys (`a.b`, then `c` for a
//! sibling `a.c`); the default column holds as many values, in order, each
//! in backticks, or `unset` for an absent value, or plain words for a
//! value computed at start (`host name`); one default for several keys
//! holds for each.

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use crate::config::Config;

    /// Dotted key → default value, for every leaf of the configuration.
    fn leaves(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) if !map.is_empty() && !is_free_map(prefix) => {
                for (key, value) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    leaves(&path, value, out);
                }
            }
            _ => {
                out.insert(prefix.to_owned(), value.clone());
            }
        }
    }

    /// Tables whose keys are the operator's (data centres and the like),
    /// not settings.
    fn is_free_map(key: &str) -> bool {
        matches!(key, "scylla.replication.datacenters")
    }

    /// The backticked pieces of a table cell.
    fn ticked(cell: &str) -> Vec<&str> {
        cell.split('`').skip(1).step_by(2).collect()
    }

    struct Row {
        line: usize,
        keys: Vec<String>,
        defaults: Vec<Option<String>>,
        env: String,
    }

    fn rows(doc: &str) -> Vec<Row> {
        let mut out = Vec::new();
        for (n, line) in doc.lines().enumerate() {
            if !line.starts_with("| `") {
                continue;
            }
            let cells: Vec<&str> = line.split(" | ").collect();
            let names = ticked(cells[0].trim_start_matches("| "));
            let first = names[0];
            let section = first.rsplit_once('.').map(|(s, _)| s);
            let keys: Vec<String> = names
                .iter()
                .map(|name| match (name.contains('.'), section) {
                    (false, Some(section)) => format!("{section}.{name}"),
                    _ => (*name).to_owned(),
                })
                .collect();
            let cell = cells[2].trim();
            let defaults = if keys.len() == 1 {
                vec![single_default(cell)]
            } else {
                match cell.split(", ").map(single_default).collect::<Vec<_>>() {
                    // One default stated for several keys holds for each.
                    one if one.len() == 1 => vec![one[0].clone(); keys.len()],
                    each => each,
                }
            };
            out.push(Row {
                line: n + 1,
                keys,
                defaults,
                env: cells[1].trim().to_owned(),
            });
        }
        out
    }

    /// `Some(literal)` for a backticked default, `None` for words.
    fn single_default(cell: &str) -> Option<String> {
        let cell = cell.trim();
        (cell.starts_with('`') && cell.ends_with('`') && cell.len() >= 2)
            .then(|| cell[1..cell.len() - 1].to_owned())
    }

    /// How the code's default is written in the table.
    fn rendered(value: &Value) -> Option<String> {
        match value {
            // An empty string is how some sections spell "not set".
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    /// What is wrong with `doc` as the reference of the code's configuration.
    fn problems(doc: &str) -> Vec<String> {
        let mut code = BTreeMap::new();
        leaves(
            "",
            &serde_json::to_value(Config::default()).unwrap(),
            &mut code,
        );
        let mut problems = Vec::new();
        let mut documented = BTreeMap::new();
        for row in rows(doc) {
            if row.keys.len() != row.defaults.len() {
                problems.push(format!(
                    "line {}: {} keys but {} defaults",
                    row.line,
                    row.keys.len(),
                    row.defaults.len()
                ));
                continue;
            }
            if row.keys.len() == 1 && !row.env.contains('…') {
                let env = format!("CHAT_{}", row.keys[0].to_uppercase().replace('.', "__"));
                if ticked(&row.env).first() != Some(&env.as_str()) {
                    problems.push(format!("line {}: env should be `{env}`", row.line));
                }
            }
            for (key, stated) in row.keys.iter().zip(&row.defaults) {
                documented.insert(key.clone(), row.line);
                let Some(value) = code.get(key) else {
                    problems.push(format!("line {}: `{key}` is not a setting", row.line));
                    continue;
                };
                match (stated, rendered(value)) {
                    // Words: computed at start, so the code holds nothing.
                    (None, None) => {}
                    (Some(stated), Some(actual)) if *stated == actual => {}
                    (stated, actual) => problems.push(format!(
                        "line {}: `{key}` defaults to {}, the table says {}",
                        row.line,
                        actual.map_or("unset".into(), |a| format!("`{a}`")),
                        stated
                            .as_deref()
                            .map_or("words".into(), |s| format!("`{s}`")),
                    )),
                }
            }
        }
        for key in code.keys() {
            if !documented.contains_key(key) {
                problems.push(format!("`{key}` has no row"));
            }
        }
        problems
    }

    #[test]
    fn the_configuration_reference_matches_the_code() {
        let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let doc = std::fs::read_to_string(doc_path).expect("docs/configuration.md");
        let problems = problems(&doc);
        assert!(
            problems.is_empty(),
            "docs/configuration.md:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn the_checker_sees_drift() {
        let doc = "| `mqtt.max_inflight` | `CHAT_MQTT__MAX_INFLIGHT` | `33` | x |\n\
                   | `mqtt.nope`, `busy_check` | `CHAT_MQTT__…` | `1`, `false` | x |\n\
                   | `mqtt.tcp_addr` | `CHAT_MQTT_TCP_ADDR` | `0.0.0.0:1883` | x |\n\
                   | `auth.hs256_secret` | `CHAT_AUTH__HS256_SECRET` | `s3cret` | x |\n";
        let found = problems(doc);
        let has = |needle: &str| found.iter().any(|p| p.contains(needle));
        assert!(
            has("line 1: `mqtt.max_inflight` defaults to `32`, the table says `33`"),
            "{found:#?}"
        );
        assert!(has("line 2: `mqtt.nope` is not a setting"), "{found:#?}");
        assert!(!has("mqtt.busy_check"), "{found:#?}");
        assert!(
            has("line 3: env should be `CHAT_MQTT__TCP_ADDR`"),
            "{found:#?}"
        );
        assert!(
            has("line 4: `auth.hs256_secret` defaults to unset"),
            "{found:#?}"
        );
        assert!(has("`mqtt.ws_addr` has no row"), "{found:#?}");
    }
}
