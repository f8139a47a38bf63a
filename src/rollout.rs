//! The rollout's schedule: which pods, in which batches, and how many may be between the
//! old revision and ready at once. What each pod needs (in place or recreated) is the
//! model's (`sidecar_model::inject::plan_rollout`); this orders them and sizes the batches,
//! with no server involved, so that it is tested without one.

use std::fmt;
use std::str::FromStr;

/// `--max-unavailable`: a count, or a percentage of the pods the rollout covers (rounded
/// down, at least one), as a Deployment's `maxUnavailable` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxUnavailable {
    Count(usize),
    Percent(u32),
}

impl FromStr for MaxUnavailable {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a count (10) or a percentage (10%) above 0");
        match text.strip_suffix('%') {
            Some(p) => match p.parse::<u32>() {
                Ok(p) if (1..=100).contains(&p) => Ok(MaxUnavailable::Percent(p)),
                _ => Err(bad()),
            },
            None => match text.parse::<usize>() {
                Ok(n) if n > 0 => Ok(MaxUnavailable::Count(n)),
                _ => Err(bad()),
            },
        }
    }
}

impl fmt::Display for MaxUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxUnavailable::Count(n) => write!(f, "{n}"),
            MaxUnavailable::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl MaxUnavailable {
    /// The batch size over `total` pods.
    pub fn of(self, total: usize) -> usize {
        match self {
            MaxUnavailable::Count(n) => n,
            MaxUnavailable::Percent(p) => (total * p as usize / 100).max(1),
        }
    }
}

/// A pod the rollout knows, by the key it sorts by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The schedule: the outdated pods in batches, and those `--partition` leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule<T> {
    pub batches: Vec<Vec<T>>,
    pub left: Vec<T>,
}

/// Orders the outdated pods (by namespace and name, so that a second run sees the same
/// order and resumes where the first stopped), leaves the last `partition` of the
/// `covered` pods on the old revision, and cuts the rest into batches of
/// `max_unavailable` of the covered pods.
pub fn schedule<T>(
    mut outdated: Vec<(PodKey, T)>,
    covered: usize,
    max_unavailable: MaxUnavailable,
    partition: usize,
) -> Schedule<(PodKey, T)> {
    outdated.sort_by(|a, b| a.0.cmp(&b.0));
    let keep = outdated.len().saturating_sub(partition);
    let left = outdated.split_off(keep);
    let size = max_unavailable.of(covered).max(1);
    let mut batches = Vec::new();
    let mut rest = outdated.into_iter().peekable();
    while rest.peek().is_some() {
        batches.push(rest.by_ref().take(size).collect());
    }
    Schedule { batches, left }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(n: usize) -> Vec<(PodKey, usize)> {
        (0..n)
            .rev()
            .map(|i| {
                (
                    PodKey {
                        namespace: "shop".into(),
                        name: format!("web-{i:03}"),
                    },
                    i,
                )
            })
            .collect()
    }

    #[test]
    fn max_unavailable_reads_as_a_deployment_reads_it() {
        assert_eq!("10%".parse(), Ok(MaxUnavailable::Percent(10)));
        assert_eq!("3".parse(), Ok(MaxUnavailable::Count(3)));
        for bad in ["0", "0%", "101%", "-1", "ten", ""] {
            assert!(bad.parse::<MaxUnavailable>().is_err(), "{bad}");
        }
        assert_eq!(MaxUnavailable::Percent(10).of(200), 20);
        assert_eq!(MaxUnavailable::Percent(10).of(5), 1);
        assert_eq!(MaxUnavailable::Count(7).of(5), 7);
    }

    #[test]
    fn batches_follow_the_name_order_and_the_partition_leaves_the_last() {
        let s = schedule(pods(200), 200, MaxUnavailable::Percent(10), 50);
        // 150 pods to roll, 20 at a time (10% of the 200 covered).
        let sizes: Vec<usize> = s.batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [20, 20, 20, 20, 20, 20, 20, 10]);
        assert_eq!(s.batches[0][0].0.name, "web-000");
        assert_eq!(s.left.len(), 50);
        assert_eq!(s.left[0].0.name, "web-150");
        // Resumed after three batches: the same pods in the same batches, the same left.
        let resumed: Vec<_> = pods(200).into_iter().filter(|(_, i)| *i >= 60).collect();
        let r = schedule(resumed, 200, MaxUnavailable::Percent(10), 50);
        assert_eq!(r.batches, s.batches[3..]);
        assert_eq!(r.left, s.left);
    }

    #[test]
    fn nothing_outdated_is_no_batch() {
        let s = schedule(pods(0), 10, MaxUnavailable::Count(2), 0);
        assert!(s.batches.is_empty() && s.left.is_empty());
        let s = schedule(pods(3), 10, MaxUnavailable::Count(2), 5);
        assert!(s.batches.is_empty());
        assert_eq!(s.left.len(), 3);
    }
}
