//! `repo = ["rust", "tokio"]`: a list of values, one partition each.

use super::{Fill, Source};

#[derive(Debug)]
pub struct Values {
    key: String,
    values: Vec<String>,
}

impl Values {
    pub fn new(key: &str, values: Vec<String>) -> Self {
        Values { key: key.to_string(), values }
    }
}

impl Source for Values {
    fn count(&self) -> u64 {
        self.values.len() as u64
    }

    fn values(&self) -> Box<dyn Iterator<Item = Fill> + Send + '_> {
        Box::new(self.values.iter().map(|v| Fill::of(vec![(self.key.clone(), v.clone())])))
    }

    fn placeholders(&self) -> Vec<String> {
        vec![self.key.clone()]
    }
}
