//! One page's request: the job's URL with the partition's values filled in, its params and
//! headers, the JSON body with dotted paths set, and what the pagination strategy asks on top
//! (an offset, a cursor, a next link the server gave). Also the same request in words, secrets
//! masked, for `check --probe` and `status`.

use serde_json::Value;

use crate::error::Error;
use crate::fetch::Outgoing;
use crate::paginate::PageRequest;
use crate::partition::Partition;
use crate::plan::{fill, fill_json, Encoding, Plan};

/// The job's request for one partition, with the strategy's parameters applied.
/// `since`: the incremental mark as a query parameter, when no placeholder takes it.
pub(crate) fn outgoing(
    plan: &Plan,
    partition: &Partition,
    request: &PageRequest,
    since: Option<&(String, String)>,
) -> Result<Outgoing, Error> {
    let url = match &request.url {
        Some(url) => url.clone(),
        None => {
            let mut url = plan.url_for(partition).map_err(|e| Error::Partitions(e.to_string()))?;
            let params: Vec<(&str, String)> = plan
                .request
                .params
                .iter()
                .filter(|(k, _)| !request.query.iter().any(|(name, _)| name == k))
                .map(|(k, v)| (k.as_str(), fill(v, partition, Encoding::Raw)))
                .chain(since.map(|(k, v)| (k.as_str(), v.clone())))
                .chain(request.query.iter().map(|(k, v)| (k.as_str(), v.clone())))
                .collect();
            if !params.is_empty() {
                replace_query(&mut url, &params);
            }
            url
        }
    };
    let mut headers: Vec<(String, String)> = plan
        .request
        .headers
        .iter()
        .filter(|(k, _)| !request.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case(k)))
        .map(|(k, v)| (k.clone(), fill(v, partition, Encoding::Raw)))
        .collect();
    headers.extend(request.headers.iter().cloned());
    let mut body = plan.request.body.as_ref().map(|b| fill_json(b, partition));
    if !request.body.is_empty() {
        let body = body.get_or_insert_with(|| Value::Object(Default::default()));
        for (path, value) in &request.body {
            set_dotted(body, path, value.clone());
        }
    }
    Ok(Outgoing { method: plan.request.method, url, headers, body })
}

/// Add `params` to `url`'s query, replacing (never repeating) a parameter the URL already
/// carries: `?page=1&per_page=20` written in `request.url` gives way to the strategy's `page`.
/// A URL without such a parameter keeps its query exactly as written.
fn replace_query(url: &mut url::Url, params: &[(&str, String)]) {
    let taken = |name: &str| params.iter().any(|(k, _)| *k == name);
    if url.query_pairs().any(|(name, _)| taken(&name)) {
        let kept: Vec<(String, String)> =
            url.query_pairs().filter(|(name, _)| !taken(name)).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        url.set_query(None);
        if !kept.is_empty() {
            url.query_pairs_mut().extend_pairs(kept);
        }
    }
    url.query_pairs_mut().extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
}

/// The next request of a partition in words, secrets masked.
pub(crate) fn describe_request(plan: &Plan, request: &PageRequest) -> String {
    let r = &plan.redactor;
    if let Some(url) = &request.url {
        return format!("next page: {}", r.url(url));
    }
    let mut parts: Vec<String> = request.query.iter().map(|(k, v)| format!("{k}={}", r.redact(v))).collect();
    parts.extend(request.body.iter().map(|(k, v)| format!("body {k}={}", r.redact(&v.to_string()))));
    parts.extend(request.headers.iter().map(|(k, v)| format!("header {k}: {}", r.header(k, v))));
    format!("next page: {}", parts.join(", "))
}

/// Set `a.b.c` in a JSON object, creating objects on the way.
pub(crate) fn set_dotted(target: &mut Value, path: &str, value: Value) {
    let mut node = target;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if !node.is_object() {
            *node = Value::Object(Default::default());
        }
        let map = node.as_object_mut().expect("made an object above");
        if parts.peek().is_none() {
            map.insert(part.to_string(), value);
            return;
        }
        node = map.entry(part.to_string()).or_insert_with(|| Value::Object(Default::default()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_in_the_url_are_replaced_never_repeated() {
        let mut url = url::Url::parse("http://h/items?page=1&per_page=20&q=a%20b").unwrap();
        replace_query(&mut url, &[("page", "3".into()), ("per_page", "20".into())]);
        assert_eq!(url.as_str(), "http://h/items?q=a+b&page=3&per_page=20");
        let mut untouched = url::Url::parse("http://h/items?q=a%20b").unwrap();
        replace_query(&mut untouched, &[("page", "2".into())]);
        assert_eq!(
            untouched.as_str(),
            "http://h/items?q=a%20b&page=2",
            "a query with nothing replaced stays as written"
        );
    }

    #[test]
    fn dotted_paths_create_objects() {
        let mut body = serde_json::json!({"query": "{ x }", "variables": {"first": 10}});
        set_dotted(&mut body, "variables.after", Value::from("c1"));
        set_dotted(&mut body, "page.number", Value::from(2));
        assert_eq!(
            body,
            serde_json::json!({"query": "{ x }", "variables": {"first": 10, "after": "c1"}, "page": {"number": 2}})
        );
    }
}
