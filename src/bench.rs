//! Benchmarks: what an evaluation costs, in the mode policy-server uses (a fresh instance
//! per request) and the one kwctl uses (one instance, reused), with a baseline measured in
//! the same run so the figures mean something on a noisy machine.

use serde::Serialize;
use serde_json::Value;
use std::time::{Duration, Instant};

use crate::admission;
use crate::runtime::{HostError, Policy};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum InstanceMode {
    /// A fresh instance per evaluation, as policy-server runs policies.
    Fresh,
    /// One instance for every evaluation, as kwctl bench does.
    Reused,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub policy: String,
    pub request: String,
    pub operation: String,
    pub instance: InstanceMode,
    pub samples: usize,
    pub min_us: f64,
    pub median_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    pub per_second: f64,
    /// Minor page faults per evaluation, instantiation and teardown included: memory a
    /// fresh instance touches is zero-filled by the kernel page by page, which on a
    /// virtual machine costs microseconds a page. Linux only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faults: Option<f64>,
    /// median / the baseline's median for the same request, operation and mode (the
    /// median: one scheduler hiccup on a shared machine moves a mean).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// On a fresh row: its median / the reused row's median for the same policy, request
    /// and operation, the price of the instance policy-server builds per request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fresh_over_reused: Option<f64>,
}

pub struct Plan {
    pub warmup: usize,
    pub samples: usize,
}

fn stats(
    policy: &str,
    request: &str,
    operation: &str,
    instance: InstanceMode,
    mut times: Vec<Duration>,
    faults: Option<u64>,
) -> Stats {
    times.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let n = times.len().max(1);
    let mean = times.iter().map(|d| us(*d)).sum::<f64>() / n as f64;
    Stats {
        policy: policy.into(),
        request: request.into(),
        operation: operation.into(),
        instance,
        samples: times.len(),
        min_us: times.first().map(|d| us(*d)).unwrap_or_default(),
        median_us: times
            .get(times.len() / 2)
            .map(|d| us(*d))
            .unwrap_or_default(),
        p99_us: times
            .get((times.len() * 99).div_ceil(100).saturating_sub(1))
            .map(|d| us(*d))
            .unwrap_or_default(),
        mean_us: mean,
        per_second: if mean > 0.0 { 1e6 / mean } else { 0.0 },
        faults: faults.map(|f| f as f64 / n as f64),
        ratio: None,
        fresh_over_reused: None,
    }
}

/// This thread's minor page faults so far, from `/proc/thread-self/stat` (field 10; the
/// fields are counted after the command name, which may hold spaces). Read by hand:
/// rustix has no `getrusage`, and libc's would be the host's second `unsafe`.
fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let (_, fields) = stat.rsplit_once(')')?;
    fields.split_whitespace().nth(7)?.parse().ok()
}

/// One policy to measure: its name in the table, the module, and the payload it gets.
pub struct Subject<'a> {
    pub name: &'a str,
    pub policy: &'a Policy,
    pub payload: Vec<u8>,
}

/// Times `operation` for every subject, in `mode`, in rounds: each round calls every
/// subject once (starting one further each round, so none always follows the same
/// neighbour), so a noisy stretch of the machine falls on all of them alike and the ratios
/// to the baseline stay meaningful. A failing call stops the run: a benchmark of
/// errors measures nothing.
pub fn measure(
    subjects: &[Subject],
    request: &str,
    operation: &str,
    mode: InstanceMode,
    plan: &Plan,
) -> Result<Vec<Stats>, HostError> {
    let instances = match mode {
        InstanceMode::Fresh => Vec::new(),
        InstanceMode::Reused => subjects
            .iter()
            .map(|s| s.policy.instantiate())
            .collect::<Result<Vec<_>, _>>()?,
    };
    let mut times = vec![Vec::with_capacity(plan.samples); subjects.len()];
    // Counted outside the timed span; none at all where the count cannot be read.
    let mut faults = vec![minor_faults().map(|_| 0); subjects.len()];
    for round in 0..plan.warmup + plan.samples {
        for k in 0..subjects.len() {
            let i = (round + k) % subjects.len();
            let subject = &subjects[i];
            let faults_before = minor_faults();
            let start = Instant::now();
            match instances.get(i) {
                Some(instance) => instance.call(operation, &subject.payload)?,
                None => subject.policy.call(operation, &subject.payload)?,
            };
            let elapsed = start.elapsed();
            if round >= plan.warmup {
                times[i].push(elapsed);
                faults[i] = faults[i]
                    .zip(faults_before.zip(minor_faults()))
                    .map(|(sum, (before, after))| sum + after.saturating_sub(before));
            }
        }
    }
    Ok(subjects
        .iter()
        .zip(times.into_iter().zip(faults))
        .map(|(s, (t, f))| stats(s.name, request, operation, mode, t, f))
        .collect())
}

/// `validate` of every policy (with its settings) on `request`, in every mode.
pub fn bench_request(
    policies: &[(String, Policy, Value)],
    request_name: &str,
    request: &Value,
    modes: &[InstanceMode],
    plan: &Plan,
) -> anyhow::Result<Vec<Stats>> {
    bench_operation(
        policies,
        (request_name, "validate"),
        modes,
        plan,
        |settings| admission::validate_payload(request, settings),
    )
}

/// `validate_settings` of every policy, in every mode (it does not depend on a request).
pub fn bench_settings(
    policies: &[(String, Policy, Value)],
    modes: &[InstanceMode],
    plan: &Plan,
) -> anyhow::Result<Vec<Stats>> {
    bench_operation(
        policies,
        ("-", "validate_settings"),
        modes,
        plan,
        serde_json::to_vec,
    )
}

/// One operation of every policy, its payload made from the policy's settings.
fn bench_operation(
    policies: &[(String, Policy, Value)],
    (request, operation): (&str, &str),
    modes: &[InstanceMode],
    plan: &Plan,
    payload: impl Fn(&Value) -> serde_json::Result<Vec<u8>>,
) -> anyhow::Result<Vec<Stats>> {
    let subjects = policies
        .iter()
        .map(|(name, policy, settings)| {
            Ok(Subject {
                name,
                policy,
                payload: payload(settings)
                    .map_err(|e| anyhow::anyhow!("{name}: cannot write the payload: {e}"))?,
            })
        })
        .collect::<anyhow::Result<Vec<Subject>>>()?;
    let mut out = Vec::new();
    for &mode in modes {
        out.extend(measure(&subjects, request, operation, mode, plan)?);
    }
    Ok(out)
}

/// Fills each row's ratio to the baseline row of the same request, operation and mode.
pub fn with_ratios(mut rows: Vec<Stats>, baseline: &str) -> Vec<Stats> {
    let base: Vec<Stats> = rows
        .iter()
        .filter(|r| r.policy == baseline)
        .cloned()
        .collect();
    for row in &mut rows {
        row.ratio = base
            .iter()
            .find(|b| {
                b.request == row.request
                    && b.operation == row.operation
                    && b.instance == row.instance
            })
            .filter(|b| b.median_us > 0.0)
            .map(|b| row.median_us / b.median_us);
    }
    rows
}

/// Fills each fresh row's ratio to the reused row of the same policy, request and
/// operation (when both modes were measured).
pub fn with_instantiation(mut rows: Vec<Stats>) -> Vec<Stats> {
    let reused: Vec<Stats> = rows
        .iter()
        .filter(|r| r.instance == InstanceMode::Reused)
        .cloned()
        .collect();
    for row in rows
        .iter_mut()
        .filter(|r| r.instance == InstanceMode::Fresh)
    {
        row.fresh_over_reused = reused
            .iter()
            .find(|r| {
                r.policy == row.policy && r.request == row.request && r.operation == row.operation
            })
            .filter(|r| r.median_us > 0.0)
            .map(|r| row.median_us / r.median_us);
    }
    rows
}

/// The instantiation rows: per policy, request and operation, the fresh and reused
/// medians and their ratio; empty when only one mode was measured.
pub fn instantiation_table(rows: &[Stats]) -> String {
    let fresh: Vec<&Stats> = rows
        .iter()
        .filter(|r| r.fresh_over_reused.is_some())
        .collect();
    if fresh.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\ninstantiation: a fresh instance per request (policy-server) over a reused one (kwctl)\n{:<26} {:<30} {:<17} {:>9} {:>9} {:>13}\n",
        "policy", "request", "operation", "fresh µs", "reused µs", "fresh/reused"
    );
    for r in fresh {
        let ratio = r.fresh_over_reused.unwrap_or_default();
        out.push_str(&format!(
            "{:<26} {:<30} {:<17} {:>9.1} {:>9.1} {:>13.2}\n",
            r.policy,
            r.request,
            r.operation,
            r.median_us,
            r.median_us / ratio,
            ratio
        ));
    }
    let worst = rows
        .iter()
        .filter_map(|r| r.fresh_over_reused)
        .fold(0.0, f64::max);
    out.push_str(&format!("worst fresh/reused: {worst:.2}\n"));
    out
}

pub fn table(rows: &[Stats]) -> String {
    let mut out = format!(
        "{:<26} {:<30} {:<17} {:<6} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7} {:>6}\n",
        "policy",
        "request",
        "operation",
        "inst",
        "min µs",
        "median µs",
        "p99 µs",
        "mean µs",
        "evals/s",
        "faults",
        "ratio"
    );
    for r in rows {
        let ratio = r
            .ratio
            .map(|x| format!("{x:.2}"))
            .unwrap_or_else(|| "-".into());
        let faults = r
            .faults
            .map(|x| format!("{x:.1}"))
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<26} {:<30} {:<17} {:<6} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.0} {:>7} {:>6}\n",
            r.policy,
            r.request,
            r.operation,
            match r.instance {
                InstanceMode::Fresh => "fresh",
                InstanceMode::Reused => "reused",
            },
            r.min_us,
            r.median_us,
            r.p99_us,
            r.mean_us,
            r.per_second,
            faults,
            ratio
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics() {
        let times: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let s = stats("p", "r", "validate", InstanceMode::Fresh, times, Some(250));
        assert_eq!((s.min_us, s.median_us, s.p99_us), (1.0, 51.0, 99.0));
        assert!((s.mean_us - 50.5).abs() < 1e-9);
        assert_eq!(s.faults, Some(2.5));
        let rows = with_ratios(
            vec![
                s.clone(),
                Stats {
                    policy: "null".into(),
                    median_us: 25.5,
                    ..s
                },
            ],
            "null",
        );
        assert_eq!(rows[0].ratio, Some(2.0));
        let reused = Stats {
            instance: InstanceMode::Reused,
            median_us: 17.0,
            ..rows[0].clone()
        };
        let rows = with_instantiation(vec![rows[0].clone(), reused, rows[1].clone()]);
        assert_eq!(rows[0].fresh_over_reused, Some(3.0));
        assert_eq!(rows[1].fresh_over_reused, None);
        assert_eq!(
            rows[2].fresh_over_reused, None,
            "the null row has no reused twin"
        );
        let text = instantiation_table(&rows);
        assert!(text.contains("worst fresh/reused: 3.00"), "{text}");
        assert!(instantiation_table(&rows[1..]).is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn touching_fresh_memory_counts_as_faults() {
        let before = minor_faults().expect("Linux counts minor faults");
        // Pages the kernel has not handed this process yet, one fault each when touched:
        // 64 MiB is past the largest block glibc serves from memory it already has.
        let mut pages = vec![0u8; 64 << 20];
        for page in pages.chunks_mut(1 << 20) {
            page[0] = 1;
        }
        std::hint::black_box(&pages);
        let after = minor_faults().unwrap();
        assert!(after - before >= 64, "{before} -> {after}");
    }
}
