//! Shards: one run of a job split among N workers that a batch scheduler starts (Kubernetes
//! Indexed Jobs, AWS Batch and Slurm arrays, CI matrices), each harvesting its own share into
//! the same output folder.
//!
//! Which shard a worker is comes from `--shard I/N` or the scheduler's own variables; the
//! shards of one run share a run id, from `--run-id` or the scheduler. A partition belongs to
//! the shard its key hashes to (xxh64, the same in every build and on every machine). When a
//! job has fewer partitions than shards, a partition whose pages are independent (offset or
//! page pagination with a total) is dealt out by page instead: page p (1-based) to shard
//! (p − 1) mod N, so that N workers share even one large partition and no page is fetched
//! twice. Each shard writes files of its own (`part-<run>-<I>of<N>-<seq>`, its checkpoint,
//! lock and manifest); the run is complete when all N manifests exist.

use serde::{Deserialize, Serialize};

/// This worker's place among the run's shards: `index` of `count`, 0-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// `2of7`: what this shard's file names carry.
    pub fn tag(self) -> String {
        format!("{}of{}", self.index, self.count)
    }

    /// The shard a tag names (`2of7`), the inverse of [`Shard::tag`].
    pub fn from_tag(tag: &str) -> Option<Shard> {
        let (index, count) = tag.split_once("of")?;
        Some(Shard { index: index.parse().ok()?, count: count.parse().ok()? })
    }

    /// True when the partition with `key` is this shard's (whole partitions, by hash).
    pub fn owns(self, key: &str) -> bool {
        xxhash_rust::xxh64::xxh64(key.as_bytes(), 0) % u64::from(self.count) == u64::from(self.index)
    }

    /// `I/N`, 0 ≤ I < N.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || format!("shard {text:?} must be I/N with 0 <= I < N (0-based, as Kubernetes and AWS Batch count)");
        let (index, count) = text.trim().split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) =
            (index.trim().parse().map_err(|_| bad())?, count.trim().parse().map_err(|_| bad())?);
        Shard::new(index, count).map_err(|_| bad())
    }

    fn new(index: u32, count: u32) -> Result<Shard, String> {
        match count >= 1 && index < count {
            true => Ok(Shard { index, count }),
            false => Err(format!("shard index {index} is not below the shard count {count} (indexes are 0-based)")),
        }
    }
}

/// A sharded run: this worker's shard and the id all the run's shards share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlan {
    pub shard: Shard,
    /// Names the run across workers; `None` only for a single shard.
    pub run_id: Option<String>,
}

/// What the command line asked for.
#[derive(Debug, Clone, Default)]
pub struct ShardAsked {
    /// `--shard I/N`.
    pub shard: Option<String>,
    /// `--shards N`, the index from the scheduler.
    pub shards: Option<u32>,
    /// `--run-id`.
    pub run_id: Option<String>,
}

/// The scheduler variables that give a worker's index, with what each scheduler is called.
const INDEX_VARIABLES: [(&str, &str); 3] = [
    ("JOB_COMPLETION_INDEX", "Kubernetes Indexed Job"),
    ("AWS_BATCH_JOB_ARRAY_INDEX", "AWS Batch array"),
    ("SLURM_ARRAY_TASK_ID", "Slurm array"),
];

/// The shard and run id from the command line, else the environment (`env` looks a variable
/// up; an empty value counts as unset). `None` for an unsharded run.
pub fn resolve(asked: &ShardAsked, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<ShardPlan>, String> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let shard = match (asked.shard.clone().or_else(|| env("HARVEST_SHARD")), asked.shards) {
        (Some(text), shards) => {
            let shard = Shard::parse(&text)?;
            if let Some(n) = shards.filter(|n| *n != shard.count) {
                return Err(format!("--shards {n} disagrees with shard {text}"));
            }
            shard
        }
        (None, Some(count)) => Shard::new(scheduler_index(&env)?, count)?,
        (None, None) => {
            return match asked.run_id {
                Some(_) => Err("--run-id names the run that shards share: give --shard I/N or --shards N too".into()),
                None => Ok(None),
            }
        }
    };
    let run_id = match asked.run_id.clone().or_else(|| run_id_from_env(&env)) {
        Some(id) => Some(check_run_id(&id)?),
        None if shard.count > 1 => {
            return Err(format!(
                "shard {} of {} needs the run id that all shards share, so that they write one run: \
                 --run-id, HARVEST_RUN_ID, or the scheduler's (AWS_BATCH_JOB_ID, SLURM_ARRAY_JOB_ID, \
                 GITHUB_RUN_ID); Kubernetes Indexed Jobs: set HARVEST_RUN_ID from the Job's name",
                shard.index, shard.count
            ))
        }
        None => None,
    };
    Ok(Some(ShardPlan { shard, run_id }))
}

/// The worker's index from the scheduler that started it.
fn scheduler_index(env: &dyn Fn(&str) -> Option<String>) -> Result<u32, String> {
    for (name, scheduler) in INDEX_VARIABLES {
        let Some(value) = env(name) else { continue };
        let parse = |name: &str, value: &str| {
            value.trim().parse::<u32>().map_err(|_| format!("{name}={value:?} ({scheduler}) is not a shard index"))
        };
        let index = parse(name, &value)?;
        if name == "SLURM_ARRAY_TASK_ID" {
            // Slurm counts from the array's first index (`--array=1-8`).
            let min = env("SLURM_ARRAY_TASK_MIN").map(|v| parse("SLURM_ARRAY_TASK_MIN", &v)).transpose()?;
            return index.checked_sub(min.unwrap_or(0)).ok_or_else(|| {
                format!("SLURM_ARRAY_TASK_ID={index} is below SLURM_ARRAY_TASK_MIN={}", min.unwrap_or(0))
            });
        }
        return Ok(index);
    }
    let names: Vec<&str> = INDEX_VARIABLES.iter().map(|(name, _)| *name).collect();
    Err(format!("--shards needs this worker's index: --shard I/N, HARVEST_SHARD, or one of {}", names.join(", ")))
}

/// `HARVEST_RUN_ID`, else the id of the scheduler's job that started every shard.
fn run_id_from_env(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    env("HARVEST_RUN_ID")
        // An array child's id is `<job>:<index>`: the parent's is the shards' common id.
        .or_else(|| env("AWS_BATCH_JOB_ID").map(|id| id.split(':').next().unwrap_or_default().to_string()))
        .or_else(|| env("SLURM_ARRAY_JOB_ID"))
        .or_else(|| {
            let attempt = env("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".into());
            env("GITHUB_RUN_ID").map(|id| format!("{id}-{attempt}"))
        })
}

/// A run id names a file: letters, digits, `.`, `_` and `-`, at most 128 of them.
fn check_run_id(id: &str) -> Result<String, String> {
    let id = id.trim();
    let fine = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    match fine {
        true => Ok(id.to_string()),
        false => Err(format!("run id {id:?} must be 1 to 128 letters, digits, '.', '_' or '-'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn asked(shard: Option<&str>, shards: Option<u32>, run_id: Option<&str>) -> ShardAsked {
        ShardAsked { shard: shard.map(Into::into), shards, run_id: run_id.map(Into::into) }
    }

    #[test]
    fn the_shard_comes_from_the_flag_or_each_scheduler() {
        let plan =
            |a: ShardAsked, e: &[(&str, &str)]| resolve(&a, &env(e)).map(|p| p.map(|p| (p.shard.tag(), p.run_id)));
        assert_eq!(plan(asked(None, None, None), &[]), Ok(None));
        assert_eq!(plan(asked(Some("2/7"), None, Some("r1")), &[]), Ok(Some(("2of7".into(), Some("r1".into())))));
        assert_eq!(plan(asked(None, None, None), &[("HARVEST_SHARD", "0/1")]), Ok(Some(("0of1".into(), None))));
        let k8s = [("JOB_COMPLETION_INDEX", "3"), ("HARVEST_RUN_ID", "harvest-abc")];
        assert_eq!(plan(asked(None, Some(4), None), &k8s), Ok(Some(("3of4".into(), Some("harvest-abc".into())))));
        let batch = [("AWS_BATCH_JOB_ARRAY_INDEX", "1"), ("AWS_BATCH_JOB_ID", "6d1c-4e:1")];
        assert_eq!(plan(asked(None, Some(2), None), &batch), Ok(Some(("1of2".into(), Some("6d1c-4e".into())))));
        let slurm = [("SLURM_ARRAY_TASK_ID", "5"), ("SLURM_ARRAY_TASK_MIN", "1"), ("SLURM_ARRAY_JOB_ID", "812")];
        assert_eq!(plan(asked(None, Some(8), None), &slurm), Ok(Some(("4of8".into(), Some("812".into())))));
        let github = [("HARVEST_SHARD", "1/3"), ("GITHUB_RUN_ID", "99"), ("GITHUB_RUN_ATTEMPT", "2")];
        assert_eq!(plan(asked(None, None, None), &github), Ok(Some(("1of3".into(), Some("99-2".into())))));
        // The flag wins over the environment.
        assert_eq!(
            plan(asked(Some("0/2"), None, Some("mine")), &github),
            Ok(Some(("0of2".into(), Some("mine".into()))))
        );
    }

    #[test]
    fn a_bad_or_missing_shard_or_run_id_is_refused() {
        let refused = |a: ShardAsked, e: &[(&str, &str)]| resolve(&a, &env(e)).unwrap_err();
        for text in ["3/3", "-1/2", "1", "a/b", "0/0", "1/2/3"] {
            assert!(refused(asked(Some(text), None, Some("r")), &[]).contains("I/N"), "{text}");
        }
        assert!(refused(asked(None, Some(3), None), &[]).contains("JOB_COMPLETION_INDEX"));
        assert!(refused(asked(None, Some(3), Some("r")), &[("JOB_COMPLETION_INDEX", "3")]).contains("0-based"));
        assert!(refused(asked(Some("1/2"), None, None), &[]).contains("HARVEST_RUN_ID"));
        assert!(refused(asked(Some("1/2"), Some(3), Some("r")), &[]).contains("--shards 3"));
        assert!(refused(asked(Some("1/2"), None, Some("../x")), &[]).contains("letters"));
        assert!(refused(asked(None, None, Some("r")), &[]).contains("--shard"));
        let slurm = [("SLURM_ARRAY_TASK_ID", "0"), ("SLURM_ARRAY_TASK_MIN", "1")];
        assert!(refused(asked(None, Some(2), Some("r")), &slurm).contains("below"));
    }

    #[test]
    fn keys_hash_the_same_in_every_build_and_spread_evenly() {
        // xxh64 with seed 0, as every implementation computes it: shards of two builds agree.
        assert_eq!(xxhash_rust::xxh64::xxh64(b"", 0), 0xef46db3751d8e999);
        assert_eq!(xxhash_rust::xxh64::xxh64(b"abc", 0), 0x44bc2cf5ad770999);
        let count = 7;
        let mut per_shard = [0u32; 7];
        for n in 0..7000 {
            let key = format!("n={n}");
            let owners: Vec<u32> = (0..count).filter(|&i| Shard { index: i, count }.owns(&key)).collect();
            assert_eq!(owners.len(), 1, "{key} belongs to exactly one shard");
            per_shard[owners[0] as usize] += 1;
        }
        assert!(per_shard.iter().all(|&n| (850..1150).contains(&n)), "{per_shard:?}");
    }
}
