//! The traffic layer's pieces used together the way the serving handlers use them: route each
//! request, mirror a sample to a shadow and compare, remember the prediction, join feedback,
//! and read the outcome per version from the window and from the report sent to the registry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_api::records::EndpointPolicy;
use ferry_api::traffic::{Report, VersionCounters};
use ferry_feedback::{JoinError, Prediction, RecentPredictions};
use ferry_serving::runtime::Tensor;
use ferry_serving::traffic::{
    EndpointStats, Route, compare, predicted_classes, route_policy, sampled,
};

/// A stand-in model: class 1 when `x` is above `threshold`, as `[1, 2]` probabilities and a
/// label.
fn predict(threshold: f32, x: f32) -> Vec<Tensor> {
    let p = if x > threshold { 0.8 } else { 0.2 };
    vec![
        Tensor::new("label", vec![1], vec![i64::from(x > threshold)]).unwrap(),
        Tensor::new("probabilities", vec![1, 2], vec![1.0 - p, p]).unwrap(),
    ]
}

fn threshold_of(version: i64) -> f32 {
    match version {
        1 => 0.0,  // stable: always right
        2 => 0.5,  // canary: wrong on (0, 0.5]
        _ => -2.0, // shadow: wrong on [-1, 0]
    }
}

fn policy() -> EndpointPolicy {
    serde_json::from_value(serde_json::json!({
        "model": "fraud",
        "stable": 1,
        "canary": {"version": 2, "weight": 0.2},
        "shadows": [{"version": 3, "sample_rate": 0.5}],
    }))
    .unwrap()
}

#[test]
fn routed_mirrored_and_judged_traffic_shows_how_each_version_does() {
    let t0 = Instant::now();
    let policy = policy();
    let stats = EndpointStats::new(
        "fraud",
        Duration::from_secs(1),
        Duration::from_secs(900),
        t0,
    );
    let predictions = RecentPredictions::new(100_000, usize::MAX, Duration::from_secs(600));
    let n = 10_000_u32;

    for i in 0..n {
        let now = t0 + Duration::from_millis(u64::from(i));
        let id = format!("req-{i}");
        // Inputs spread evenly over [-1, 1).
        let x = f64::from(i) / f64::from(n) * 2.0 - 1.0;
        let x = x as f32;
        let (route, version) = route_policy("fraud", &id, &policy);
        let outputs = predict(threshold_of(version), x);
        stats.record_request(now, version, Duration::from_millis(3), Ok(()));
        predictions.insert(
            &id,
            Prediction {
                version,
                route,
                classes: predicted_classes(&outputs),
                at: chrono::Utc::now(),
            },
            now,
        );
        for shadow in &policy.shadows {
            if sampled("fraud", shadow.version, &id, shadow.sample_rate) {
                let mirrored = predict(threshold_of(shadow.version), x);
                stats.record_shadow(now, shadow.version, &compare(&outputs, &mirrored));
            }
        }
    }

    // Feedback arrives later for every request: the true class.
    let later = t0 + Duration::from_secs(20);
    for i in 0..n {
        let x = (f64::from(i) / f64::from(n) * 2.0 - 1.0) as f32;
        let id = format!("req-{i}");
        let entry = predictions.take_for_feedback(&id, later).unwrap();
        let truth = i64::from(x > 0.0);
        let correct = entry.classes.as_deref().map(|c| c == [truth]);
        stats.record_feedback(
            later,
            entry.version,
            Some(if correct == Some(true) { 1.0 } else { 0.0 }),
            correct,
        );
        assert_eq!(entry.route == Route::Canary, entry.version == 2);
    }
    assert_eq!(
        predictions.take_for_feedback("req-0", later),
        Err(JoinError::AlreadyGiven)
    );

    let analysis = stats.analysis(
        later,
        Duration::from_secs(900),
        Some(&policy),
        &std::collections::BTreeMap::new(),
    );
    let by_version: BTreeMap<i64, _> = analysis.versions.iter().map(|v| (v.version, v)).collect();
    let (stable, canary, shadow) = (by_version[&1], by_version[&2], by_version[&3]);

    // The split: 20% ± 3.29 σ.
    let share = canary.requests as f64 / f64::from(n);
    assert!(
        (share - 0.2).abs() < 3.29 * (0.2 * 0.8 / f64::from(n)).sqrt(),
        "{share}"
    );
    assert_eq!(stable.requests + canary.requests, u64::from(n));
    // Feedback: the stable version is always right, the canary wrong on a quarter of [-1, 1).
    assert_eq!(stable.accuracy, Some(1.0));
    let canary_accuracy = canary.accuracy.unwrap();
    assert!((canary_accuracy - 0.75).abs() < 0.05, "{canary_accuracy}");
    assert!(canary.reward_mean.unwrap() < stable.reward_mean.unwrap());
    // The shadow disagrees with the primary wherever x ≤ 0 (about half the time).
    assert_eq!(shadow.role, "shadow");
    let agreement = shadow.shadow_agreement.unwrap();
    assert!((agreement - 0.5).abs() < 0.05, "{agreement}");
    assert!(shadow.shadow_compared > 4_000 && shadow.shadow_compared < 6_000);

    // Everything recorded also goes to the registry, once, as a report it can parse.
    let interval = stats.take_report(later);
    let report = Report {
        id: None,
        replica: "serving-0".to_owned(),
        interval_seconds: interval.elapsed.as_secs_f64(),
        revision: Some(1),
        versions: interval.versions,
        load_error: None,
    };
    let json = serde_json::to_string(&report).unwrap();
    let parsed: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed, report);
    let mut total = VersionCounters::default();
    report.versions.values().for_each(|c| total.merge(c));
    assert_eq!(total.requests, u64::from(n));
    assert_eq!(total.feedback.labels, u64::from(n));
    assert!(stats.take_report(later).versions.is_empty());
}
