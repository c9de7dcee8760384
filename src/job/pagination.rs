//! `[pagination]`: every key of every kind, which keys each kind takes, and the strategy's
//! configuration built from them. A key of another kind is an error at its line.

use super::*;

/// Every key of every pagination kind; which apply is checked against `kind`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PaginationFile {
    kind: Spanned<String>,
    page_size: Option<Spanned<u64>>,
    max_pages: Option<Spanned<u64>>,
    max_records: Option<Spanned<u64>>,
    params_in: Option<Spanned<String>>,
    offset_param: Option<Spanned<String>>,
    limit_param: Option<Spanned<String>>,
    start: Option<Spanned<u64>>,
    total: Option<Spanned<String>>,
    page_param: Option<Spanned<String>>,
    size_param: Option<Spanned<String>>,
    total_pages: Option<Spanned<String>>,
    cursor_param: Option<Spanned<String>>,
    cursor_in: Option<Spanned<String>>,
    next: Option<Spanned<String>>,
    next_header: Option<Spanned<String>>,
    has_more: Option<Spanned<String>>,
}

impl PaginationFile {
    /// The keys present, with their positions, for the per-kind check.
    fn present(&self) -> Vec<(&'static str, Range<usize>)> {
        let mut keys = Vec::new();
        macro_rules! key {
            ($($field:ident),*) => {$(
                if let Some(v) = &self.$field { keys.push((stringify!($field), v.span())); }
            )*};
        }
        key!(params_in, offset_param, limit_param, start, total, page_param, size_param, total_pages);
        key!(cursor_param, cursor_in, next, next_header, has_more);
        keys
    }
}

const KIND_KEYS: &[(&str, &[&str])] = &[
    ("offset", &["offset_param", "limit_param", "start", "total", "params_in"]),
    ("page", &["page_param", "size_param", "start", "total_pages", "total", "params_in"]),
    ("cursor", &["cursor_param", "cursor_in", "next", "next_header", "has_more", "limit_param", "params_in"]),
    ("next_url", &["next", "limit_param"]),
    ("link_header", &["limit_param"]),
    ("none", &[]),
];

impl From<cursor::Config> for Style {
    fn from(c: cursor::Config) -> Self {
        Style::Cursor(c)
    }
}

/// True when the strategy puts parameters in a JSON body.
pub(super) fn sends_in_body(style: &Style) -> bool {
    match style {
        Style::Offset(c) => c.params_in == ParamsIn::Body,
        Style::Page(c) => c.params_in == ParamsIn::Body,
        Style::Cursor(c) => c.params_in == ParamsIn::Body || c.cursor_in == ParamsIn::Body,
        _ => false,
    }
}

impl Cx<'_> {
    pub(super) fn pagination(&self, p: &PaginationFile) -> R<PaginationPlan> {
        let kind = p.kind.get_ref().as_str();
        let Some((_, allowed)) = KIND_KEYS.iter().find(|(k, _)| *k == kind) else {
            let kinds: Vec<&str> = KIND_KEYS.iter().map(|(k, _)| *k).collect();
            return Err(self.err(
                p.kind.span(),
                format!("pagination kind {kind:?} is not one of {}{}", kinds.join(", "), did_you_mean(kind, &kinds)),
            ));
        };
        for (key, span) in p.present() {
            if !allowed.contains(&key) {
                let owners: Vec<&str> =
                    KIND_KEYS.iter().filter(|(_, keys)| keys.contains(&key)).map(|(k, _)| *k).collect();
                return Err(self.err(
                    span,
                    format!(
                        "`{key}` does not apply to pagination kind {kind:?} (it is for kind {})",
                        owners.join(" or ")
                    ),
                ));
            }
        }
        let text = |v: &Option<Spanned<String>>, default: &str| -> R<String> {
            Ok(match v {
                Some(v) => self.string(v)?,
                None => default.to_string(),
            })
        };
        let opt_path = |v: &Option<Spanned<String>>| -> R<Option<JsonPath>> {
            match v {
                Some(v) if !v.get_ref().trim().is_empty() => Ok(Some(self.path(v)?)),
                _ => Ok(None),
            }
        };
        let params_in = self.choice(
            &p.params_in,
            "params_in",
            &[("query", ParamsIn::Query), ("body", ParamsIn::Body)],
            ParamsIn::Query,
        )?;
        let page_size = match &p.page_size {
            Some(s) if *s.get_ref() == 0 => return Err(self.err(s.span(), "page_size must be at least 1")),
            Some(s) => Some(*s.get_ref()),
            None => None,
        };
        let explicit_limit = p.limit_param.is_some() || page_size.is_some();
        let limit_param = if explicit_limit { Some(text(&p.limit_param, "limit")?) } else { None };
        let style = match kind {
            "offset" => Style::Offset(offset::Config {
                offset_param: text(&p.offset_param, "offset")?,
                limit_param: text(&p.limit_param, "limit")?,
                start: p.start.as_ref().map(|s| *s.get_ref()).unwrap_or(0),
                page_size: page_size.unwrap_or(100),
                total: opt_path(&p.total)?,
                params_in,
            }),
            "page" => Style::Page(page::Config {
                page_param: text(&p.page_param, "page")?,
                size_param: match &p.size_param {
                    Some(s) if s.get_ref().is_empty() => None,
                    other => Some(text(other, "per_page")?),
                },
                start: p.start.as_ref().map(|s| *s.get_ref()).unwrap_or(1),
                page_size: Some(page_size.unwrap_or(100)),
                total_pages: opt_path(&p.total_pages)?,
                total: opt_path(&p.total)?,
                params_in,
            }),
            "cursor" => {
                let next = match (&p.next, &p.next_header) {
                    (Some(n), Some(_)) => return Err(self.err(n.span(), "give either next or next_header, not both")),
                    (Some(n), None) => cursor::NextCursor::Body(self.path(n)?),
                    (None, Some(h)) => cursor::NextCursor::Header(self.string(h)?),
                    (None, None) => cursor::NextCursor::Body(JsonPath::parse("$.next_cursor").expect("a valid path")),
                };
                let cursor_in = self.choice(
                    &p.cursor_in,
                    "cursor_in",
                    &[("query", ParamsIn::Query), ("body", ParamsIn::Body), ("header", ParamsIn::Header)],
                    params_in,
                )?;
                cursor::Config {
                    cursor_param: text(&p.cursor_param, "cursor")?,
                    cursor_in,
                    next,
                    has_more: opt_path(&p.has_more)?,
                    limit_param,
                    page_size,
                    params_in,
                }
                .into()
            }
            "next_url" => Style::NextUrl(next_url::Config {
                next: match &p.next {
                    Some(n) => self.path(n)?,
                    None => JsonPath::parse("$.next").expect("a valid path"),
                },
                limit_param,
                page_size,
            }),
            "link_header" => Style::LinkHeader(link_header::Config { limit_param, page_size }),
            _ => Style::None,
        };
        Ok(PaginationPlan {
            style,
            max_pages: p.max_pages.as_ref().map(|v| *v.get_ref()),
            max_records: p.max_records.as_ref().map(|v| *v.get_ref()),
        })
    }
}
