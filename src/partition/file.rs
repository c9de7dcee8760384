//! `id = { file = "ids.csv", column = "id" }`, `{ file = "ids.txt" }` (one value a line) and
//! `{ file = "ids.ndjson", field = "$.id" }`: values in a file beside the job file, read as a
//! stream (`.gz` and `.zst` files decompressed on the way). Blank values are skipped; a
//! file's fingerprint is its size and SHA-256.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::listed::{Entries, Failure, ListedEntry, Reader};
use crate::jsonpath::{Document, JsonPath, Kind, ParseError, PathError};

#[derive(Debug)]
pub struct FileValues {
    path: PathBuf,
    form: Form,
}

#[derive(Debug, Clone)]
pub enum Form {
    /// A CSV file with a header line; the values of one column.
    Csv { column: String },
    /// One value a line.
    Lines,
    /// One JSON document a line; the value at a path in each.
    Ndjson { field: JsonPath },
}

impl FileValues {
    pub fn new(path: PathBuf, form: Form) -> Self {
        FileValues { path, form }
    }

    fn open(&self) -> Result<Box<dyn BufRead + Send>, Failure> {
        let file = std::fs::File::open(&self.path)
            .map_err(|e| Failure::Job(format!("cannot read {}: {e}", self.path.display())))?;
        decompressed(&self.path, file).map_err(|e| self.failed(0, &e.to_string()))
    }

    fn failed(&self, line: u64, what: &str) -> Failure {
        match line {
            0 => Failure::Read(format!("{}: {what}", self.path.display())),
            n => Failure::Read(format!("{} line {n}: {what}", self.path.display())),
        }
    }
}

/// A file's bytes, decompressed when its name ends in `.gz` or `.zst`.
pub fn decompressed(path: &Path, file: impl Read + Send + 'static) -> std::io::Result<Box<dyn BufRead + Send>> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    Ok(if name.ends_with(".gz") {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else if name.ends_with(".zst") {
        Box::new(BufReader::new(zstd::Decoder::new(file)?))
    } else {
        Box::new(BufReader::with_capacity(64 << 10, file))
    })
}

/// The lines of `input`, numbered from 1, without their line ends.
pub fn lines(input: impl BufRead) -> impl Iterator<Item = (u64, std::io::Result<String>)> {
    input.lines().zip(1u64..).map(|(line, n)| (n, line.map(|l| l.trim_end_matches('\r').to_string())))
}

/// The value at `field` in one JSON line, as text: strings without quotes, numbers digit for
/// digit. `None` when it is missing or null; an error when it is not a single value.
pub fn field_text(field: &JsonPath, line: &str) -> Result<Option<String>, FieldError> {
    let doc = Document::parse(line.as_bytes()).map_err(FieldError::NotJson)?;
    text_at(field, &doc)
}

/// The value at `field` in a parsed document, as [`field_text`] gives it.
pub fn text_at(field: &JsonPath, doc: &Document<'_>) -> Result<Option<String>, FieldError> {
    let Some(node) = field.first(doc)? else { return Ok(None) };
    match node.kind() {
        Kind::Null => Ok(None),
        Kind::Object | Kind::Array => {
            Err(FieldError::NotAValue { path: field.as_str().to_string(), kind: node.kind().name() })
        }
        _ => Ok(node.as_text()),
    }
}

/// Why a record gives no value at a field.
#[derive(Debug, thiserror::Error)]
pub enum FieldError {
    #[error("not JSON ({0})")]
    NotJson(ParseError),
    #[error("{0}")]
    Path(#[from] PathError),
    #[error("{path} is {kind}, not a value")]
    NotAValue { path: String, kind: &'static str },
}

impl Reader for FileValues {
    fn entries(&self) -> Result<Entries<'_>, Failure> {
        let input = self.open()?;
        let value = |text: &str| {
            let text = text.trim();
            (!text.is_empty()).then(|| ListedEntry { value: text.to_string(), ..ListedEntry::default() })
        };
        Ok(match &self.form {
            Form::Lines => Box::new(lines(input).filter_map(move |(n, line)| match line {
                Ok(line) => value(&line).map(Ok),
                Err(e) => Some(Err(self.failed(n, &e.to_string()))),
            })),
            Form::Ndjson { field } => Box::new(lines(input).filter_map(move |(n, line)| {
                let line = match line {
                    Ok(line) if line.trim().is_empty() => return None,
                    Ok(line) => line,
                    Err(e) => return Some(Err(self.failed(n, &e.to_string()))),
                };
                match field_text(field, &line) {
                    Ok(text) => text.and_then(|t| value(&t)).map(Ok),
                    Err(e) => Some(Err(self.failed(n, &e.to_string()))),
                }
            })),
            Form::Csv { column } => {
                let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
                let headers = reader.headers().map_err(|e| self.failed(1, &e.to_string()))?.clone();
                let Some(at) = headers.iter().position(|h| h.trim() == column) else {
                    let columns: Vec<&str> = headers.iter().collect();
                    return Err(Failure::Job(format!(
                        "{} has no column {column:?} (its header has {})",
                        self.path.display(),
                        columns.join(", ")
                    )));
                };
                Box::new(reader.into_records().filter_map(move |record| match record {
                    Ok(record) => record.get(at).and_then(value).map(Ok),
                    Err(e) => {
                        let line = e.position().map_or(0, |p| p.line());
                        Some(Err(self.failed(line, &e.to_string())))
                    }
                }))
            }
        })
    }

    fn fingerprint(&self) -> Result<String, Failure> {
        let mut file = std::fs::File::open(&self.path)
            .map_err(|e| Failure::Job(format!("cannot read {}: {e}", self.path.display())))?;
        let mut hasher = Sha256::new();
        let size = std::io::copy(&mut file, &mut hasher).map_err(|e| self.failed(0, &e.to_string()))?;
        let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(format!("{size} bytes, sha256 {digest}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::listed::{Batch, Listed};
    use crate::partition::Source;

    fn values(source: &Listed) -> Vec<(String, String)> {
        source.open().unwrap();
        source.values().map(|fill| fill.pairs[0].clone()).collect()
    }

    #[test]
    fn csv_lines_and_ndjson_give_their_values_once_each_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("ids.csv");
        std::fs::write(&csv, "name,id\r\na,7\r\nb, 3\r\n\"c, d\",7\r\ne,\r\nf,10\r\n").unwrap();
        let source = Listed::new("id", Box::new(FileValues::new(csv, Form::Csv { column: "id".into() })), None);
        assert_eq!(values(&source), [("id".into(), "7".into()), ("id".into(), "3".into()), ("id".into(), "10".into())]);
        assert_eq!(source.count(), 3);

        let txt = dir.path().join("ids.txt");
        std::fs::write(&txt, "x\n\ny\nx\nz").unwrap();
        let source = Listed::new("v", Box::new(FileValues::new(txt, Form::Lines)), None);
        assert_eq!(values(&source).into_iter().map(|p| p.1).collect::<Vec<_>>(), ["x", "y", "z"]);

        let ndjson = dir.path().join("ids.ndjson.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"{\"id\":5}\n{\"id\":\"5\"}\n{\"id\":null}\n{}\n{\"id\":1.50}\n").unwrap();
        std::fs::write(&ndjson, gz.finish().unwrap()).unwrap();
        let field = JsonPath::parse("$.id").unwrap();
        let source = Listed::new("id", Box::new(FileValues::new(ndjson, Form::Ndjson { field })), None);
        assert_eq!(values(&source).into_iter().map(|p| p.1).collect::<Vec<_>>(), ["5", "1.50"]);
    }

    #[test]
    fn batches_join_their_values_and_are_named_by_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("ids.txt");
        std::fs::write(&txt, (1..=7).map(|i| format!("{i}\n")).collect::<String>()).unwrap();
        let batch = Batch { size: 3, join: ",".into() };
        let source = Listed::new("id", Box::new(FileValues::new(txt, Form::Lines)), Some(batch));
        source.open().unwrap();
        assert_eq!(source.count(), 3);
        let fills: Vec<_> = source.values().collect();
        assert_eq!(fills[0].pairs, [("id".to_string(), "1,2,3".to_string())]);
        assert_eq!((fills[2].label.as_deref(), fills[2].asked.clone()), (Some("7+0"), vec!["7".to_string()]));
    }

    #[test]
    fn a_missing_column_or_a_value_that_is_no_value_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("ids.csv");
        std::fs::write(&csv, "name,key\na,1\n").unwrap();
        let source = Listed::new("id", Box::new(FileValues::new(csv, Form::Csv { column: "id".into() })), None);
        let error = source.open().unwrap_err().to_string();
        assert!(error.contains("ids.csv has no column \"id\" (its header has name, key)"), "{error}");

        let ndjson = dir.path().join("ids.ndjson");
        std::fs::write(&ndjson, "{\"id\":1}\n{\"id\":[2]}\n").unwrap();
        let field = JsonPath::parse("$.id").unwrap();
        let source = Listed::new("id", Box::new(FileValues::new(ndjson, Form::Ndjson { field })), None);
        let error = source.open().unwrap_err().to_string();
        assert!(error.contains("ids.ndjson line 2: $.id is an array, not a value"), "{error}");
    }

    #[test]
    fn a_file_changed_under_a_pass_breaks_it_rather_than_ending_it_early() {
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("ids.txt");
        std::fs::write(&txt, "1\n2\n3\n").unwrap();
        let source = Listed::new("id", Box::new(FileValues::new(txt.clone(), Form::Lines)), None);
        source.open().unwrap();
        std::fs::write(&txt, "1\n2\n").unwrap();
        assert_eq!(source.values().count(), 2);
        let error = source.failure().expect("the pass is broken").to_string();
        assert!(error.contains("changed while the run read them"), "{error}");
    }
}
