//! Editor support: the JSON Schema of job files validates every job in jobs/ (as Even Better
//! TOML and taplo would: TOML read into JSON, then checked) and refuses what the reader
//! refuses; shell completions for each shell.

use std::process::Command;

use crate::support::python_with;

fn harvest(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_harvest")).args(args).output().expect("harvest runs")
}

/// Every `.toml` under jobs/, examples included.
fn job_files() -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "toml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs"), &mut files);
    files.sort();
    files
}

/// Each TOML text checked against the schema: the errors for each, in order.
fn validate(python: &str, schema: &str, texts: &[String]) -> Vec<Vec<String>> {
    let script = r#"
import datetime, json, sys, tomllib, jsonschema
schema, texts = json.load(sys.stdin)
jsonschema.Draft7Validator.check_schema(schema)
validator = jsonschema.Draft7Validator(schema)
def plain(v):  # TOML dates and times are strings in JSON, as taplo reads them
    if isinstance(v, dict): return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list): return [plain(x) for x in v]
    if isinstance(v, (datetime.date, datetime.time)): return v.isoformat()
    return v
print(json.dumps([[e.message for e in validator.iter_errors(plain(tomllib.loads(t)))] for t in texts]))
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_vec(&(serde_json::from_str::<serde_json::Value>(schema).unwrap(), texts)).unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_job_file_validates_against_the_schema_and_unknown_keys_do_not() {
    let Some(python) = python_with("jsonschema") else { return };
    let output = harvest(&["schema"]);
    assert!(output.status.success());
    let schema = String::from_utf8(output.stdout).unwrap();

    let files = job_files();
    assert!(files.len() >= 10, "{files:?}");
    let texts: Vec<String> = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    for (file, errors) in files.iter().zip(validate(&python, &schema, &texts)) {
        assert!(errors.is_empty(), "{}: {errors:?}", file.display());
    }

    // What the reader refuses, the schema refuses.
    let base = "name = \"t\"\n[request]\nurl = \"http://h/x\"\n[records]\npath = \"$.items[*]\"\n";
    let refused = [
        format!("{base}nmae = \"x\"\n[pagination]\nkind = \"offset\"\n"),
        "name = \"t\"\n[request]\nulr = \"http://h/x\"\n[records]\npath = \"$[*]\"\n[pagination]\nkind = \"offset\"\n".to_string(),
        format!("{base}[pagination]\nkind = \"offset\"\ncursor_param = \"after\"\n"),
        format!("{base}[pagination]\nkind = \"sideways\"\n"),
        format!("{base}[pagination]\nkind = \"cursor\"\nnext = \"$.n\"\npage_sise = 10\n"),
        format!("{base}[pagination]\nkind = \"none\"\n[auth]\nkind = \"bearer\"\ntoken = \"${{T}}\"\nusername = \"u\"\n"),
        format!("{base}[pagination]\nkind = \"none\"\n[output]\nrows_per_fle = 10\n"),
        format!("{base}[pagination]\nkind = \"none\"\n[partitions]\nday = {{ start = \"2024-01-01\", end = \"2024-02-01\", stride = \"1d\" }}\n"),
        "Name = \"T\"\n[request]\nurl = \"http://h/x\"\n[records]\npath = \"$[*]\"\n[pagination]\nkind = \"none\"\n".to_string(),
        format!("{base}[pagination]\nkind = \"none\"\n[partitions]\nid = {{ file = \"ids.csv\", colum = \"id\" }}\n"),
        format!("{base}[pagination]\nkind = \"none\"\n[partitions]\nid = {{ from = \"repos\" }}\n"),
        format!("{base}[pagination]\nkind = \"page\"\ntotal = {{ header = \"X-Total-Count\", pth = \"$.t\" }}\n"),
        format!("{base}[pagination]\nkind = \"page\"\ntotal = {{ path = \"$.t\" }}\n"),
    ];
    let accepted = [
        format!("{base}[pagination]\nkind = \"cursor\"\nnext = \"$.n\"\npage_size = 10\nmax_pages = 3\n"),
        format!("{base}[pagination]\nkind = \"none\"\n[auth]\nallow_origins = [\"https://cdn.example.com\"]\n"),
        format!("{base}[pagination]\nkind = \"none\"\n[partitions]\nday = {{ start = 2024-01-01, end = 2024-02-01 }}\nrepo = [\"a\", 2]\n"),
        format!(
            "{base}[pagination]\nkind = \"none\"\n[partitions]\nid = {{ file = \"ids.csv\", column = \"id\", batch = 50, join = \";\" }}\n\
             [partitions.check]\nfield = \"$.id\"\n"
        ),
        format!(
            "{base}[pagination]\nkind = \"none\"\n[partitions]\nrepo = {{ from = \"repos\", field = \"$.name\", include = {{ owner = \"$.owner.login\" }} }}\n"
        ),
        format!(
            "{base}[pagination]\nkind = \"page\"\ntotal = {{ header = \"X-Pagination\", path = \"$.total\" }}\n\
             total_pages = {{ header = \"X-Total-Pages\" }}\n"
        ),
        format!("{base}[pagination]\nkind = \"cursor\"\nnext = {{ header = \"X-Next\" }}\nhas_more = \"$.more\"\n"),
    ];
    let verdicts = validate(&python, &schema, &refused.iter().chain(&accepted).cloned().collect::<Vec<_>>());
    for (text, errors) in refused.iter().zip(&verdicts) {
        assert!(!errors.is_empty(), "the schema accepts a job the reader refuses:\n{text}");
    }
    for (text, errors) in accepted.iter().zip(&verdicts[refused.len()..]) {
        assert!(errors.is_empty(), "the schema refuses a good job: {errors:?}\n{text}");
    }
    // ... and the reader agrees with both verdicts.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ids.csv"), "id\n1\n").unwrap();
    for (text, good) in refused.iter().map(|t| (t, false)).chain(accepted.iter().map(|t| (t, true))) {
        let path = dir.path().join("job.toml");
        std::fs::write(&path, text.replace("${T}", "x")).unwrap();
        let check = harvest(&["check", path.to_str().unwrap()]);
        assert_eq!(check.status.success(), good, "{text}\n{}", String::from_utf8_lossy(&check.stderr));
    }

    // Pipeline files too: `[[job]]` tables, and nothing of a job's.
    let pipelines = [
        ("name = \"p\"\n[[job]]\nfile = \"a.toml\"\n[[job]]\nfile = \"b.toml\"\nafter = [\"a\"]\n", true),
        ("[[job]]\nfile = \"a.toml\"\nafer = [\"b\"]\n", false),
        ("[[job]]\nfile = \"a.toml\"\n[request]\nurl = \"http://h/x\"\n", false),
        ("[[job]]\nafter = [\"b\"]\n", false),
    ];
    let texts: Vec<String> = pipelines.iter().map(|(t, _)| t.to_string()).collect();
    for ((text, good), errors) in pipelines.iter().zip(validate(&python, &schema, &texts)) {
        assert_eq!(errors.is_empty(), *good, "{text}: {errors:?}");
    }
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let output = harvest(&["completions", shell]);
        assert!(output.status.success(), "{shell}");
        let script = String::from_utf8(output.stdout).unwrap();
        for word in ["run", "check", "status", "init", "schema", "completions", "progress", "output-dir"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    // Bash parses the bash script.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("harvest.bash");
    std::fs::write(&path, harvest(&["completions", "bash"]).stdout).unwrap();
    let parsed = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(parsed.status.success(), "{}", String::from_utf8_lossy(&parsed.stderr));
    assert!(!harvest(&["completions", "tcsh"]).status.success(), "an unknown shell is refused");
}

/// Every key `harvest schema` knows, anywhere in a job or pipeline file.
fn schema_keys() -> std::collections::BTreeSet<String> {
    fn walk(value: &serde_json::Value, keys: &mut std::collections::BTreeSet<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Object(properties)) = map.get("properties") {
                    keys.extend(properties.keys().cloned());
                }
                map.values().for_each(|v| walk(v, keys));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, keys)),
            _ => {}
        }
    }
    let output = harvest(&["schema"]);
    assert!(output.status.success());
    let mut keys = std::collections::BTreeSet::new();
    walk(&serde_json::from_slice(&output.stdout).unwrap(), &mut keys);
    keys
}

/// docs/REFERENCE.md names every key the schema knows, and its reference job sets no key the
/// schema does not know (outside `[partitions]`, whose keys are the job's own names).
#[test]
fn the_reference_names_every_key_the_schema_knows_and_no_other() {
    let keys = schema_keys();
    assert!(keys.len() > 80, "{keys:?}");
    let reference =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/REFERENCE.md")).unwrap();
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| {
            [format!("`{k}"), format!("{k} ="), format!("[{k}]"), format!("[[{k}]]")]
                .iter()
                .all(|form| !reference.contains(form))
        })
        .collect();
    assert!(missing.is_empty(), "docs/REFERENCE.md does not name these keys of `harvest schema`: {missing:?}");
    let block =
        reference.split("<!-- reference:start -->").nth(1).and_then(|b| b.split("<!-- reference:end -->").next());
    let mut section = String::new();
    for line in block.expect("the reference block").lines() {
        // The line without its comment marker (keys shown commented out count too) or a
        // trailing comment.
        let line = line.trim_start_matches('#').trim();
        let line = line.split("  #").next().unwrap_or(line).trim();
        if line.starts_with('[') && line.ends_with(']') {
            section = line.to_string();
            continue;
        }
        let Some((key, _)) = line.split_once(" = ") else { continue };
        let key = key.trim();
        if section == "[partitions]" || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        assert!(keys.contains(key), "the reference sets `{key}` ({section}), which `harvest schema` does not know");
    }
}
