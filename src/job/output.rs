//! `[output]`: format, compression, parts, checkpoints, and the Parquet keys.

use super::*;

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct OutputFile {
    format: Option<Spanned<String>>,
    dir: Option<Spanned<String>>,
    compression: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    rows_per_file: Option<Spanned<u64>>,
    checkpoint_interval: Option<Spanned<String>>,
    schema: Option<Spanned<String>>,
    row_group_size: Option<Spanned<u64>>,
    timestamps: Option<Spanned<String>>,
    on_mismatch: Option<Spanned<String>>,
    infer_sample: Option<Spanned<u64>>,
    endpoint: Option<Spanned<String>>,
    allow_http: Option<Spanned<bool>>,
    lease_ttl: Option<Spanned<String>>,
    optimize_every: Option<Spanned<u64>>,
    primary_key: Option<Spanned<Vec<Spanned<String>>>>,
    deleted: Option<Spanned<String>>,
}

impl Cx<'_> {
    /// `[output]`; `format_flag` is `--format`, which decides which keys apply. An incremental
    /// job appends unless it says otherwise: each sync adds what changed, earlier parts stay.
    pub(super) fn output(&self, o: &OutputFile, format_flag: Option<Format>, incremental: bool) -> R<OutputPlan> {
        let format = self.choice(
            &o.format,
            "format",
            &[("ndjson", Format::Ndjson), ("parquet", Format::Parquet), ("delta", Format::Delta)],
            Format::Ndjson,
        )?;
        let checkpoint_interval = self.duration(&o.checkpoint_interval, Duration::from_secs(60))?;
        let compression = match format {
            Format::Ndjson => self.choice(
                &o.compression,
                "compression",
                &[("none", Compression::None), ("gzip", Compression::Gzip), ("zstd", Compression::Zstd)],
                Compression::None,
            )?,
            Format::Parquet | Format::Delta => self.choice(
                &o.compression,
                "compression",
                &[("zstd", Compression::Zstd), ("snappy", Compression::Snappy), ("none", Compression::None)],
                Compression::Zstd,
            )?,
        };
        let usual = if incremental { Mode::Append } else { Mode::Replace };
        let mode = self.choice(
            &o.mode,
            "mode",
            &[("replace", Mode::Replace), ("append", Mode::Append), ("merge", Mode::Merge)],
            usual,
        )?;
        let merge = self.merge(o, format, mode)?;
        let rows_per_file = self.at_least_one(&o.rows_per_file, "rows_per_file")?.unwrap_or(1_000_000);
        let dir = match &o.dir {
            Some(d) => PathBuf::from(self.string(d)?),
            None => PathBuf::from("output"),
        };
        let parquet = self.parquet(o)?;
        let object = crate::store::object::is_url(&dir.to_string_lossy());
        let endpoint = o.endpoint.as_ref().map(|e| self.string(e)).transpose()?;
        for (key, span) in [
            o.endpoint.as_ref().map(|v| ("endpoint", v.span())),
            o.allow_http.as_ref().map(|v| ("allow_http", v.span())),
            o.lease_ttl.as_ref().map(|v| ("lease_ttl", v.span())),
        ]
        .into_iter()
        .flatten()
        {
            if !object {
                return Err(self.err(span, format!("{key} applies to object storage (dir = \"s3://bucket/prefix\")")));
            }
        }
        let lease_ttl = self.duration(&o.lease_ttl, Duration::from_secs(120))?;
        if lease_ttl < Duration::from_secs(1) {
            return Err(self.err(o.lease_ttl.as_ref().expect("set").span(), "lease_ttl must be at least 1s"));
        }
        let store = crate::plan::StorePlan {
            endpoint,
            allow_http: o.allow_http.as_ref().is_some_and(|b| *b.get_ref()),
            lease_ttl,
        };
        if format == Format::Ndjson && format_flag != Some(Format::Parquet) {
            let parquet_only = [
                o.schema.as_ref().map(|v| ("schema", v.span())),
                o.row_group_size.as_ref().map(|v| ("row_group_size", v.span())),
                o.timestamps.as_ref().map(|v| ("timestamps", v.span())),
                o.on_mismatch.as_ref().map(|v| ("on_mismatch", v.span())),
                o.infer_sample.as_ref().map(|v| ("infer_sample", v.span())),
            ];
            if let Some((key, span)) = parquet_only.into_iter().flatten().next() {
                return Err(self.err(span, format!("{key} applies to format = \"parquet\" or \"delta\" only")));
            }
        }
        let optimize_every = self.at_least_one(&o.optimize_every, "optimize_every")?;
        if let (Some(v), false) = (&o.optimize_every, format == Format::Delta) {
            return Err(self.err(v.span(), "optimize_every applies to format = \"delta\" only"));
        }
        Ok(OutputPlan {
            format,
            dir,
            compression,
            mode,
            rows_per_file,
            checkpoint_interval,
            parquet,
            store,
            optimize_every,
            merge,
        })
    }

    /// `mode = "merge"`: a Delta table, its `primary_key` (top-level field names) and the
    /// optional `deleted` field (a path of names to a value that is `true` for a deleted row).
    fn merge(&self, o: &OutputFile, format: Format, mode: Mode) -> R<Option<MergePlan>> {
        if mode != Mode::Merge {
            let stray = [
                o.primary_key.as_ref().map(|v| ("primary_key", v.span())),
                o.deleted.as_ref().map(|v| ("deleted", v.span())),
            ];
            return match stray.into_iter().flatten().next() {
                Some((key, span)) => Err(self.err(span, format!("{key} applies to mode = \"merge\" only"))),
                None => Ok(None),
            };
        }
        let mode_span = o.mode.as_ref().expect("merge is never the default").span();
        if format != Format::Delta {
            return Err(self.err(mode_span, "mode = \"merge\" needs format = \"delta\": rows are merged into a table"));
        }
        let Some(keys) = &o.primary_key else {
            return Err(
                self.err(mode_span, "mode = \"merge\" needs primary_key = [\"id\"]: the fields that name a row")
            );
        };
        if keys.get_ref().is_empty() {
            return Err(self.err(keys.span(), "primary_key needs at least one field"));
        }
        let mut primary_key: Vec<String> = Vec::new();
        for key in keys.get_ref() {
            let name = self.string(key)?;
            if name.is_empty() || name.starts_with('$') {
                return Err(self.err(
                    key.span(),
                    format!("primary_key names a top-level field of a record (\"id\"), not {name:?}"),
                ));
            }
            if primary_key.contains(&name) {
                return Err(self.err(key.span(), format!("primary_key names {name:?} twice")));
            }
            primary_key.push(name);
        }
        let deleted = o.deleted.as_ref().map(|d| self.path(d).map(|path| (d, path))).transpose()?;
        if let Some((span, path)) = &deleted {
            if path.field_names().is_none() {
                return Err(self.err(
                    span.span(),
                    format!(
                        "deleted = {:?} must name a field by names only (\"$.deleted\", \"$.meta.deleted\")",
                        path.as_str()
                    ),
                ));
            }
        }
        Ok(Some(MergePlan { primary_key, deleted: deleted.map(|(_, path)| path) }))
    }

    pub(super) fn at_least_one(&self, value: &Option<Spanned<u64>>, key: &str) -> R<Option<u64>> {
        match value {
            Some(v) if *v.get_ref() == 0 => Err(self.err(v.span(), format!("{key} must be at least 1"))),
            Some(v) => Ok(Some(*v.get_ref())),
            None => Ok(None),
        }
    }

    pub(super) fn parquet(&self, o: &OutputFile) -> R<ParquetPlan> {
        let defaults = ParquetPlan::default();
        let (schema, schema_file) = match &o.schema {
            Some(p) => {
                let path = self.beside_job(self.string(p)?);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| self.err(p.span(), format!("schema file {} cannot be read: {e}", path.display())))?;
                let ty = crate::schema::parse_schema_file(&text)
                    .map_err(|e| self.err(p.span(), format!("schema file {}: {e}", path.display())))?;
                (Some(ty), Some(path))
            }
            None => (None, None),
        };
        let infer_timestamps = self.choice(&o.timestamps, "timestamps", &[("keep", false), ("infer", true)], false)?;
        let reject_to_json = self.choice(&o.on_mismatch, "on_mismatch", &[("error", false), ("json", true)], false)?;
        if let (Some(v), None) = (&o.on_mismatch, &schema) {
            return Err(self.err(v.span(), "on_mismatch needs a declared schema (schema = \"file.json\")"));
        }
        Ok(ParquetPlan {
            schema,
            schema_file,
            row_group_size: self.at_least_one(&o.row_group_size, "row_group_size")?.unwrap_or(defaults.row_group_size),
            infer_timestamps,
            reject_to_json,
            infer_sample: self.at_least_one(&o.infer_sample, "infer_sample")?.unwrap_or(defaults.infer_sample),
        })
    }
}
