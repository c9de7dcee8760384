//! The mock API's deterministic dataset: records 1..=N, rendered once at start.
//!
//! Each record has non-ASCII text, a nested object, an array, nulls, an integer beyond 2^53,
//! timestamps, and an `updated_at` that increases with the id, so that incremental filters
//! and exact-bytes checks have something real to work on. A record is about 500 bytes.

use chrono::{DateTime, Duration, TimeZone, Utc};

pub struct Dataset {
    records: Vec<String>,
}

const CITIES: &[(&str, f64, f64)] = &[
    ("Zürich", 47.3769, 8.5417),
    ("São Paulo", -23.5505, -46.6333),
    ("Kraków", 50.0647, 19.945),
    ("東京", 35.6762, 139.6503),
    ("Reykjavík", 64.1466, -21.9426),
];
const TAGS: &[&str] = &["alpha", "βeta", "gamma", "δelta", "epsilon"];

impl Dataset {
    pub fn new(n: u64) -> Self {
        Dataset { records: (1..=n).map(render).collect() }
    }

    pub fn len(&self) -> u64 {
        self.records.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The record with 0-based position `index`.
    pub fn record(&self, index: u64) -> &[u8] {
        self.records[index as usize].as_bytes()
    }

    pub fn record_str(&self, index: u64) -> &str {
        &self.records[index as usize]
    }

    /// The first 0-based position whose `updated_at` is after `since` (strictly: a record
    /// updated at the very instant a sync saw is not served again).
    pub fn position_since(&self, since: DateTime<Utc>) -> u64 {
        let millis = (since - base()).num_milliseconds();
        if millis < 60_000 {
            return 0;
        }
        // updated_at(id) = base + 60 s * id; position = id - 1: the first id past `since`.
        let id = millis.div_euclid(60_000) + 1;
        (id as u64).saturating_sub(1).min(self.len())
    }
}

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).single().expect("a valid date")
}

/// `record` with one more member, `forms`, holding JSON that a parser reads fine but a
/// serializer would write differently: escapes of characters that need none (`\u00e9`, `\/`),
/// a surrogate pair, an exponent, a trailing zero, a negative zero and an integer beyond
/// 2^64. A harvest that parsed and re-serialized records would change these bytes.
pub fn with_odd_forms(record: &str) -> String {
    const FORMS: &str = concat!(
        r#","forms":{"escaped":"caf\u00e9 \/ \u2713","surrogates":"\ud83d\ude00 \uD83C\uDF89","#,
        r#""exponent":1E2,"small":-2.5e-3,"trailing_zero":1.50,"negative_zero":-0,"#,
        r#""huge":123456789012345678901234567890,"#,
        r#""escapes":"\b\f\n\r\t\"\\ \u0000 \u001F"}}"#
    );
    let body = record.strip_suffix('}').expect("a record is an object");
    format!("{body}{FORMS}")
}

/// `updated_at` of record `id`.
pub fn updated_at(id: u64) -> DateTime<Utc> {
    base() + Duration::seconds(60 * id as i64)
}

fn render(id: u64) -> String {
    let (city, lat, lon) = CITIES[(id % CITIES.len() as u64) as usize];
    let tags: Vec<&str> = (0..(id % 3 + 1)).map(|i| TAGS[((id + i) % TAGS.len() as u64) as usize]).collect();
    let manager = if id.is_multiple_of(4) { "null".to_string() } else { (id / 4 + 1).to_string() };
    let created = base() + Duration::seconds(30 * id as i64);
    format!(
        concat!(
            r#"{{"id":{id},"name":"Ærøskøbing #{id} — café “{city}”","email":"user{id}@example.com","nickname":{nickname},"#,
            r#""active":{active},"score":{score:.2},"snowflake":{snowflake},"tags":{tags},"#,
            r#""address":{{"street":"{id} Hauptstraße","city":"{city}","geo":{{"lat":{lat},"lon":{lon}}}}},"#,
            r#""manager_id":{manager},"deleted_at":null,"created_at":"{created}","updated_at":"{updated}","#,
            r#""notes":"Record {id}: naïve façade, ünïcödé ✓, quotes \"ok\", backslash \\ and tab\t end. {pad}"}}"#
        ),
        id = id,
        city = city,
        // An empty string, a null and a value, in turn: the three must stay distinct.
        nickname = match id % 3 {
            0 => "\"\"".to_string(),
            1 => "null".to_string(),
            _ => format!("\"nick{id}\""),
        },
        active = !id.is_multiple_of(3),
        score = (id % 1000) as f64 / 7.0,
        snowflake = 1_234_567_890_123_456_789u64 + id,
        tags = serde_json::to_string(&tags).expect("tags serialize"),
        lat = lat,
        lon = lon,
        manager = manager,
        created = created.format("%Y-%m-%dT%H:%M:%SZ"),
        updated = updated_at(id).format("%Y-%m-%dT%H:%M:%SZ"),
        pad = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_valid_json_of_about_500_bytes() {
        let data = Dataset::new(20);
        for i in 0..20 {
            let v: serde_json::Value = serde_json::from_slice(data.record(i)).unwrap();
            assert_eq!(v["id"], i + 1);
            assert!((400..700).contains(&data.record(i).len()), "{}", data.record(i).len());
        }
    }

    #[test]
    fn odd_forms_are_valid_json_that_serde_would_write_otherwise() {
        let data = Dataset::new(1);
        let odd = with_odd_forms(data.record_str(0));
        let value: serde_json::Value = serde_json::from_str(&odd).unwrap();
        assert_eq!(value["forms"]["escaped"], "café / ✓");
        assert_ne!(serde_json::to_string(&value).unwrap(), odd);
    }

    #[test]
    fn since_finds_the_first_updated_record() {
        let data = Dataset::new(100);
        assert_eq!(data.position_since(updated_at(10)), 10);
        assert_eq!(data.position_since(updated_at(10) - Duration::seconds(1)), 9);
        assert_eq!(data.position_since(base()), 0);
        assert_eq!(data.position_since(updated_at(1)), 1);
    }
}
