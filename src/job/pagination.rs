//! `[pagination]`: `kind` picks a strategy, and the strategy reads its own keys (its `Spec`,
//! in its file under `paginate/`); the keys every kind shares are read here. A key of another
//! kind is an error at its line that names the kind it belongs to.

use toml::de::DeValue;

use schemars::{JsonSchema, Schema, SchemaGenerator};

use super::sections::KindKeys;
use super::*;
use crate::paginate::{SingleSpec, Spec};

/// The keys every pagination kind takes.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SharedPaginationKeys {
    kind: Spanned<String>,
    page_size: Option<Spanned<u64>>,
    max_pages: Option<Spanned<u64>>,
    max_records: Option<Spanned<u64>>,
}

/// A pagination kind as the job file names it: its own keys and how they are built.
struct PaginationKind {
    name: &'static str,
    keys: &'static [&'static str],
    schema: fn(&mut SchemaGenerator) -> Schema,
    build: fn(&Cx, toml::Spanned<DeValue>, Option<u64>) -> R<Style>,
}

impl PaginationKind {
    fn of<S: Spec + JsonSchema>(name: &'static str) -> PaginationKind {
        PaginationKind {
            name,
            keys: keys_of::<S>(),
            schema: S::json_schema,
            build: |cx, keys, page_size| cx.section::<S>(keys)?.build(page_size, cx),
        }
    }
}

/// Every pagination kind, in the order messages list them.
fn kinds() -> [PaginationKind; 6] {
    [
        PaginationKind::of::<offset::Spec>("offset"),
        PaginationKind::of::<page_number::Spec>("page"),
        PaginationKind::of::<cursor::Spec>("cursor"),
        PaginationKind::of::<next_url::Spec>("next_url"),
        PaginationKind::of::<link_header::Spec>("link_header"),
        PaginationKind::of::<SingleSpec>("none"),
    ]
}

/// The JSON Schema of the section: one shape per kind.
pub(super) fn schema(generator: &mut SchemaGenerator) -> Schema {
    let shared = SharedPaginationKeys::json_schema(generator);
    let own = kinds().iter().map(|kind| (kind.name, (kind.schema)(generator))).collect();
    super::sections::kinds_schema(shared, own, None)
}

impl Cx<'_> {
    pub(super) fn pagination(&self, section: &toml::Spanned<DeValue>) -> R<PaginationPlan> {
        let (shared, own): (SharedPaginationKeys, _) = self.split_section(section, "pagination")?;
        let kinds = kinds();
        let names: Vec<KindKeys> = kinds.iter().map(|k| (k.name, k.keys)).collect();
        let kind = self.kind_named("pagination", shared.kind.get_ref(), shared.kind.span(), &names)?;
        self.only_keys_of("pagination", &own, kind, &names, keys_of::<SharedPaginationKeys>())?;
        let page_size = match &shared.page_size {
            Some(s) if *s.get_ref() == 0 => return Err(self.err(s.span(), "page_size must be at least 1")),
            Some(s) => Some(*s.get_ref()),
            None => None,
        };
        Ok(PaginationPlan {
            style: (kinds[kind].build)(self, toml::Spanned::new(section.span(), DeValue::Table(own)), page_size)?,
            max_pages: shared.max_pages.map(Spanned::into_inner),
            max_records: shared.max_records.map(Spanned::into_inner),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_lists_the_keys_of_its_spec() {
        assert_eq!(keys_of::<SharedPaginationKeys>(), ["kind", "page_size", "max_pages", "max_records"]);
        let kinds = kinds();
        let link = kinds.iter().find(|k| k.name == "link_header").unwrap();
        assert_eq!(link.keys, ["limit_param"]);
        assert!(kinds.iter().find(|k| k.name == "none").unwrap().keys.is_empty());
    }

    fn error_of(pagination: &str) -> String {
        let text = format!("name = \"t\"\n[request]\nurl = \"http://h/\"\n[records]\npath = \"$[*]\"\n{pagination}");
        match parse(Path::new("t.toml"), &text, &Env::default(), &Overrides::default()) {
            Ok(_) => panic!("accepted {pagination:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_misspelt_shared_key_is_hinted_and_a_section_must_be_a_table() {
        assert_eq!(
            error_of("[pagination]\nkind = \"cursor\"\nmax_page = 3\n"),
            "t.toml:8:1: unknown key `max_page` in [pagination]; did you mean `max_pages`?"
        );
        assert_eq!(
            error_of("[pagination]\nkind = \"link_header\"\nwhatever = 3\n"),
            "t.toml:8:1: unknown key `whatever` in [pagination]; the keys here are kind, page_size, max_pages, \
             max_records, limit_param"
        );
        assert_eq!(
            error_of("[pagination]\nkind = \"none\"\nstart = 3\n"),
            "t.toml:8:9: `start` does not apply to pagination kind \"none\" (it is for kind offset or page)"
        );
        let not_a_table = "name = \"t\"\npagination = 3\n[request]\nurl = \"http://h/\"\n[records]\npath = \"$[*]\"\n";
        let error = parse(Path::new("t.toml"), not_a_table, &Env::default(), &Overrides::default()).err().unwrap();
        assert_eq!(error.to_string(), "t.toml:2:14: [pagination] must be a table");
        assert_eq!(
            error_of("[pagination]\npage_size = 3\n"),
            "t.toml:6:1: missing required key `kind` in [pagination]"
        );
    }
}
