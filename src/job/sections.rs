//! Reading a section whose keys depend on its `kind` (`[pagination]`, `[auth]`): a section
//! deserialized from its positioned table, the keys a kind's struct takes, and the
//! [`KeyReader`] through which a kind reads its values.

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};

use schemars::Schema;

use super::*;
use crate::keys::KeyReader;

/// A kind as a section names it: its name and the keys it takes.
pub(super) type KindKeys<'a> = (&'a str, &'a [&'a str]);

impl Cx<'_> {
    /// A section whose keys depend on its `kind`: the keys every kind takes (`S`), read now,
    /// and the rest, still positioned, for the kind to read.
    pub(super) fn split_section<'t, S: DeserializeOwned>(
        &self,
        section: &toml::Spanned<DeValue<'t>>,
        what: &str,
    ) -> R<(S, DeTable<'t>)> {
        let span = section.span();
        let Some(table) = section.get_ref().as_table() else {
            return Err(self.err(span, format!("[{what}] must be a table")));
        };
        let shared_keys = keys_of::<S>();
        let (shared, own): (DeTable, DeTable) = table
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .partition(|(k, _)| shared_keys.contains(&k.get_ref().as_ref()));
        Ok((self.section(toml::Spanned::new(span, DeValue::Table(shared)))?, own))
    }

    /// The kind named `name` among `kinds`, else an error at `span` listing them.
    pub(super) fn kind_named<'k>(
        &self,
        what: &str,
        name: &str,
        span: Range<usize>,
        kinds: &[KindKeys<'k>],
    ) -> R<usize> {
        kinds.iter().position(|(k, _)| *k == name).ok_or_else(|| {
            let names: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
            self.err(
                span,
                format!("{what} kind {name:?} is not one of {}{}", names.join(", "), did_you_mean(name, &names)),
            )
        })
    }

    /// Every key of `own` is one of `kinds[kind]`'s: else an error at the key that names the
    /// kind it is for, or the key it was probably meant to be, or the keys allowed.
    pub(super) fn only_keys_of(
        &self,
        what: &str,
        own: &DeTable,
        kind: usize,
        kinds: &[KindKeys],
        shared: &[&str],
    ) -> R<()> {
        let (name, keys) = kinds[kind];
        let Some((key, value)) = own.iter().find(|(k, _)| !keys.contains(&k.get_ref().as_ref())) else { return Ok(()) };
        let key_name = key.get_ref();
        let owners: Vec<&str> =
            kinds.iter().filter(|(_, keys)| keys.contains(&key_name.as_ref())).map(|(k, _)| *k).collect();
        if !owners.is_empty() {
            let owners = owners.join(" or ");
            let message = format!("`{key_name}` does not apply to {what} kind {name:?} (it is for kind {owners})");
            return Err(self.err(value.span(), message));
        }
        // A misspelt key of any kind is worth naming; otherwise list this kind's.
        let every: Vec<&str> = shared.iter().chain(kinds.iter().flat_map(|(_, keys)| keys.iter())).copied().collect();
        let allowed: Vec<&str> = shared.iter().chain(keys).copied().collect();
        let hint = Some(did_you_mean(key_name, &every)).filter(|h| !h.is_empty());
        let hint = hint.unwrap_or_else(|| key_hint(key_name, &allowed));
        Err(self.err(key.span(), format!("unknown key `{key_name}` in [{what}]{hint}")))
    }

    /// Deserialize a section read with its positions; a key it does not take is reported
    /// with a did-you-mean hint.
    pub(super) fn section<T: DeserializeOwned>(&self, value: toml::Spanned<DeValue>) -> R<T> {
        T::deserialize(toml::de::ValueDeserializer::from(value)).map_err(|e| self.toml_error(&e))
    }
}

impl KeyReader for Cx<'_> {
    fn text(&self, value: &Spanned<String>) -> R<String> {
        self.string(value)
    }

    fn path(&self, value: &Spanned<String>) -> R<JsonPath> {
        Cx::path(self, value)
    }

    fn error(&self, span: Range<usize>, message: String) -> JobError {
        self.err(span, message)
    }

    fn secret(&self, value: &Spanned<String>, what: &str) -> R<String> {
        let text = self.string(value)?;
        if !value.get_ref().contains("${") {
            self.learn(&text, what);
            self.warnings.borrow_mut().push(format!(
                "{what} is written in the job file; put it in the environment or a .env file and write ${{VAR}}"
            ));
        }
        Ok(text)
    }

    fn file(&self, value: &Spanned<String>, key: &str) -> R<(std::path::PathBuf, String)> {
        let path = self.beside_job(self.string(value)?);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| self.err(value.span(), format!("{key} {} cannot be read: {e}", path.display())))?;
        Ok((path, text))
    }

    fn json(&self, value: &Spanned<toml::Value>) -> R<serde_json::Value> {
        Cx::json(self, value.get_ref(), &value.span())
    }

    fn learn(&self, text: &str, what: &str) {
        self.secrets.borrow_mut().push(Secret::new(what, text));
    }

    fn identifier(&self, value: &Spanned<String>) -> R<String> {
        let known = self.secrets.borrow().len();
        let text = self.string(value);
        // What `${VAR}` filled in here names something; it is not a secret.
        self.secrets.borrow_mut().truncate(known);
        text
    }

    fn duration(&self, value: &Option<Spanned<String>>, default: std::time::Duration) -> R<std::time::Duration> {
        Cx::duration(self, value, default)
    }
}

/// The keys a section struct takes, as serde's derive lists them: the derive hands them to
/// `deserialize_struct`, so a deserializer that stops there learns them without a second list
/// to keep in step.
pub(super) fn keys_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};
    use serde::forward_to_deserialize_any;

    #[derive(Debug)]
    struct Found(&'static [&'static str]);

    impl std::fmt::Display for Found {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("not a struct")
        }
    }

    impl std::error::Error for Found {}

    impl de::Error for Found {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Found(&[])
        }
    }

    struct Keys;

    impl<'de> de::Deserializer<'de> for Keys {
        type Error = Found;

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Found> {
            Err(Found(fields))
        }

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Found> {
            Err(Found(&[]))
        }

        forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    match T::deserialize(Keys) {
        Err(Found(fields)) => fields,
        Ok(_) => &[],
    }
}

/// The JSON Schema of a section read by its kind: one shape per kind, each with `kind` set to
/// its name, the keys every kind shares and its own (`own`, from its `Spec`), and no other.
/// `default` is the kind a section without `kind` has.
pub(super) fn kinds_schema(shared: Schema, own: Vec<(&str, Schema)>, default: Option<&str>) -> Schema {
    let properties =
        |schema: &Schema| schema.get("properties").and_then(|p| p.as_object()).cloned().unwrap_or_default();
    let required = |schema: &Schema| schema.get("required").and_then(|r| r.as_array()).cloned().unwrap_or_default();
    let mut shared_keys = properties(&shared);
    shared_keys.remove("kind");
    let shapes: Vec<serde_json::Value> = own
        .into_iter()
        .map(|(name, spec)| {
            let mut keys = shared_keys.clone();
            keys.extend(properties(&spec));
            keys.insert("kind".into(), serde_json::json!({ "const": name }));
            let mut needed = required(&spec);
            if default != Some(name) {
                needed.push("kind".into());
            }
            serde_json::json!({
                "title": name,
                "type": "object",
                "properties": keys,
                "required": needed,
                "additionalProperties": false,
            })
        })
        .collect();
    schemars::json_schema!({ "type": "object", "oneOf": shapes })
}
