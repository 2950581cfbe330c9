//! `ferry endpoint …`, `ferry predict`, `ferry feedback`: traffic policies and predictions from
//! the command line.

use anyhow::{Context, Result, bail};
use ferry_api::client::RegistryClient;
use ferry_api::drift::DriftAnalysis;
use ferry_api::records::{
    CanaryPolicy, DecayMetric, DecayPolicy, DriftMetric, DriftPolicy, EndpointPolicy,
    EndpointRecord, ShadowPolicy,
};
use ferry_api::traffic::EndpointAnalysis;
use serde_json::{Value, json};

use crate::cli::{
    EndpointCommand, EndpointSetArgs, EndpointShowArgs, FeedbackArgs, Output, PredictArgs,
};
use crate::commands::model::connect;
use crate::output::{self, Table};

/// Runs a `ferry endpoint` subcommand.
///
/// # Errors
/// Client and server errors.
pub async fn run(command: EndpointCommand) -> Result<()> {
    match command {
        EndpointCommand::Set(args) => set(*args).await,
        EndpointCommand::Show(args) => show(args).await,
        EndpointCommand::List(args) => {
            let api = connect(&args.client)?;
            let page = api.list_endpoints(args.limit.clamp(1, 500), None).await?;
            if args.client.output == Output::Json {
                return output::json(&page);
            }
            if page.items.is_empty() {
                crate::say!(
                    "no endpoints yet; create one with `ferry endpoint set NAME --model M --stable V`"
                );
                return Ok(());
            }
            let mut table = Table::new(&[
                "NAME", "MODEL", "STABLE", "CANARY", "SHADOWS", "REVISION", "UPDATED",
            ]);
            for e in &page.items {
                table.row(vec![
                    e.name.clone(),
                    e.policy.model.clone(),
                    e.policy.stable.to_string(),
                    canary(&e.policy),
                    shadows(&e.policy),
                    e.revision.to_string(),
                    output::time(&e.updated_at),
                ]);
            }
            table.print();
            Ok(())
        }
        EndpointCommand::Rm {
            name,
            if_match,
            client,
        } => {
            let api = connect(&client)?;
            api.delete_endpoint(&name, if_match).await?;
            if client.output == Output::Json {
                return output::json(&json!({ "name": name, "deleted": true }));
            }
            crate::say!("removed endpoint {name}");
            Ok(())
        }
    }
}

async fn set(args: EndpointSetArgs) -> Result<()> {
    let mut shadow_list = Vec::new();
    for spec in &args.shadows {
        let (version, rate) = match spec.split_once(':') {
            Some((v, r)) => (
                v,
                r.parse::<f64>()
                    .with_context(|| format!("--shadow `{spec}`: `{r}` is not a rate"))?,
            ),
            None => (spec.as_str(), 1.0),
        };
        let version: i64 = version
            .parse()
            .with_context(|| format!("--shadow `{spec}`: `{version}` is not a version number"))?;
        shadow_list.push(ShadowPolicy {
            version,
            sample_rate: rate,
        });
    }
    let policy = EndpointPolicy {
        model: args.model.clone(),
        stable: args.stable,
        canary: match (args.canary, args.weight) {
            (Some(version), Some(weight)) => Some(CanaryPolicy { version, weight }),
            _ => None,
        },
        shadows: shadow_list,
        sticky_header: args.sticky_header.clone(),
        drift: None,
        max_age_seconds: match args.max_age.as_deref() {
            Some(OFF) | None => None,
            Some(text) => Some(
                crate::config::parse_duration(text)
                    .with_context(|| format!("--max-age `{text}`"))?
                    .as_secs(),
            ),
        },
        decay: match args.decay.as_deref() {
            Some(OFF) | None => None,
            Some(spec) => Some(decay_policy(spec, &args)?),
        },
    };
    let drift = match &args.drift {
        Some(spec) => {
            let (metric, threshold) = spec
                .split_once(':')
                .with_context(|| format!("--drift `{spec}` is not METRIC:THRESHOLD"))?;
            let metric = match metric.trim() {
                "psi" => DriftMetric::Psi,
                "kl" => DriftMetric::Kl,
                "js" => DriftMetric::Js,
                other => bail!("--drift: unknown metric `{other}`; use psi, kl or js"),
            };
            let threshold: f64 = threshold
                .trim()
                .parse()
                .with_context(|| format!("--drift: `{threshold}` is not a number"))?;
            Some(DriftPolicy {
                metric,
                threshold,
                min_samples: args.drift_min_samples.unwrap_or(100),
                consecutive_windows: args.drift_windows.unwrap_or(1),
                window_samples: args.drift_window_samples,
            })
        }
        None => None,
    };
    let api = connect(&args.client)?;
    // Without --drift, --max-age or --decay, keep what was set before: `set` changes the
    // routing.
    let mut policy = EndpointPolicy { drift, ..policy };
    match api.get_endpoint(&args.name).await {
        Ok(existing) => {
            let old = existing.policy;
            policy.drift = policy.drift.or(old.drift);
            // `off` removes what was set.
            if args.max_age.is_none() {
                policy.max_age_seconds = old.max_age_seconds;
            }
            if args.decay.is_none() {
                policy.decay = old.decay;
            }
        }
        Err(e) if e.status() == Some(404) => {}
        Err(e) => return Err(e.into()),
    }
    let record = api.put_endpoint(&args.name, &policy, args.if_match).await?;
    if args.client.output == Output::Json {
        return output::json(&record);
    }
    crate::say!(
        "endpoint {} revision {}: stable {}, canary {}, shadows {}",
        record.name,
        record.revision,
        record.policy.stable,
        canary(&record.policy),
        shadows(&record.policy)
    );
    Ok(())
}

/// What `--max-age` and `--decay` take to remove a policy set before.
const OFF: &str = "off";

/// `--decay METRIC:MAX_DROP` with its window and reference.
fn decay_policy(spec: &str, args: &EndpointSetArgs) -> Result<DecayPolicy> {
    let (metric, drop) = spec
        .split_once(':')
        .with_context(|| format!("--decay `{spec}` is not METRIC:MAX_DROP"))?;
    let metric = match metric.trim() {
        "accuracy" => DecayMetric::Accuracy,
        "reward" => DecayMetric::Reward,
        other => bail!("--decay: unknown metric `{other}`; use accuracy or reward"),
    };
    let max_drop: f64 = drop
        .trim()
        .parse()
        .with_context(|| format!("--decay: `{drop}` is not a number"))?;
    Ok(DecayPolicy {
        metric,
        max_drop,
        window: args.decay_window.unwrap_or(200),
        reference: args.decay_reference,
    })
}

fn canary(policy: &EndpointPolicy) -> String {
    policy.canary.as_ref().map_or("-".into(), |c| {
        format!("{} ({}%)", c.version, percent(c.weight))
    })
}

fn shadows(policy: &EndpointPolicy) -> String {
    if policy.shadows.is_empty() {
        return "-".into();
    }
    policy
        .shadows
        .iter()
        .map(|s| format!("{} ({}%)", s.version, percent(s.sample_rate)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn percent(share: f64) -> String {
    let p = share * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}", p.round())
    } else {
        format!("{p:.1}")
    }
}

async fn show(args: EndpointShowArgs) -> Result<()> {
    let window = crate::config::parse_duration(&args.window)
        .with_context(|| format!("--window `{}`", args.window))?;
    let api = connect(&args.client)?;
    let record = api.get_endpoint(&args.name).await?;
    if args.no_analysis {
        if args.client.output == Output::Json {
            return output::json(&json!({ "endpoint": record }));
        }
        print_policy(&record);
        return Ok(());
    }
    let analysis = api.endpoint_analysis(&args.name, window).await?;
    if args.client.output == Output::Json {
        return output::json(&json!({ "endpoint": record, "analysis": analysis }));
    }
    print_policy(&record);
    crate::say!();
    print_analysis(&analysis);
    Ok(())
}

fn print_policy(record: &EndpointRecord) {
    let p = &record.policy;
    crate::say!("endpoint:  {}  (revision {})", record.name, record.revision);
    crate::say!("model:     {}", p.model);
    crate::say!("stable:    {}", p.stable);
    crate::say!("canary:    {}", canary(p));
    crate::say!("shadows:   {}", shadows(p));
    if let Some(h) = &p.sticky_header {
        crate::say!("sticky:    {h}");
    }
    if let Some(d) = &p.drift {
        crate::say!(
            "drift:     {} > {} (min {} samples, {} window(s) in a row{})",
            format!("{:?}", d.metric).to_lowercase(),
            d.threshold,
            d.min_samples,
            d.consecutive_windows,
            d.window_samples
                .map(|n| format!(", windows of the newest {n} rows"))
                .unwrap_or_default()
        );
    }
    if let Some(seconds) = p.max_age_seconds {
        crate::say!("max age:   {}", human_seconds(seconds as f64));
    }
    if let Some(d) = &p.decay {
        crate::say!(
            "decay:     {} drop > {} over the newest {} {}{}",
            d.metric.as_str(),
            d.max_drop,
            d.window,
            match d.metric {
                DecayMetric::Accuracy => "labels",
                DecayMetric::Reward => "rewards",
            },
            d.reference
                .map(|r| format!(", reference {r}"))
                .unwrap_or_default()
        );
    }
    crate::say!("updated:   {}", output::time(&record.updated_at));
    for c in &record.conditions {
        let word = match (c.kind.as_str(), c.status.as_str()) {
            ("Stale", "True") => "STALE".to_string(),
            ("PerformanceDegraded", "True") => "DEGRADED".to_string(),
            ("Drifted", "True") => "DRIFTED".to_string(),
            (_, "Unknown") => "UNKNOWN".to_string(),
            _ => "ok".to_string(),
        };
        crate::say!(
            "{:<10} {word}: {}{}",
            format!("{}:", condition_label(&c.kind)),
            c.message,
            c.event.map(|e| format!(" (event {e})")).unwrap_or_default()
        );
    }
}

/// The short name `ferry endpoint show` gives a condition type.
fn condition_label(kind: &str) -> &str {
    match kind {
        "Stale" => "age",
        "PerformanceDegraded" => "quality",
        "Drifted" => "inputs",
        other => other,
    }
}

/// The analysis table `ferry endpoint show` prints.
pub fn print_analysis(a: &EndpointAnalysis) {
    crate::say!(
        "analysis over the last {} from {} replica(s){}:",
        human_seconds(a.window_seconds),
        a.replicas.len(),
        if a.replicas.is_empty() {
            String::new()
        } else {
            format!(" ({})", a.replicas.join(", "))
        }
    );
    let mut table = Table::new(&[
        "VERSION",
        "ROLE",
        "REQUESTS",
        "ERRORS",
        "P50 MS",
        "P99 MS",
        "AGREEMENT",
        "MEAN |DIFF|",
        "REWARD",
        "ACCURACY",
        "DRIFT (PSI)",
    ]);
    for v in &a.versions {
        table.row(vec![
            v.version.to_string(),
            v.role.clone(),
            v.requests.to_string(),
            match v.error_rate {
                Some(r) => format!("{} ({:.1}%)", v.errors, r * 100.0),
                None => "-".into(),
            },
            opt(v.latency_p50_ms, 2),
            opt(v.latency_p99_ms, 2),
            match v.shadow_agreement {
                Some(r) => format!("{:.1}% of {}", r * 100.0, v.shadow_compared),
                None => "-".into(),
            },
            match v.shadow_mean_abs_diff {
                Some(0.0) => "0".into(),
                Some(d) => format!("{d:.2e}"),
                None => "-".into(),
            },
            match v.reward_mean {
                Some(r) => format!("{r:.3} (n={})", v.reward_count),
                None => "-".into(),
            },
            match v.accuracy {
                Some(r) => format!("{:.1}% (n={})", r * 100.0, v.label_count),
                None => "-".into(),
            },
            drift_cell(v.drift.as_ref()),
        ]);
    }
    table.print();
    if let Some(e) = &a.load_error {
        crate::say!("\nwarning: a replica could not apply the newest policy: {e}");
    }
}

/// The worst feature's PSI and its name, e.g. `3.21 (f0)`; `-` without a profile or live data.
fn drift_cell(drift: Option<&DriftAnalysis>) -> String {
    match drift.and_then(|d| d.scores.map(|s| (s.psi, d.worst_feature.as_deref()))) {
        Some((psi, Some(feature))) => format!("{psi:.2} ({feature})"),
        Some((psi, None)) => format!("{psi:.2}"),
        None => "-".into(),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

fn human_seconds(s: f64) -> String {
    if s >= 0.0 && s.fract() == 0.0 && s < u64::MAX as f64 {
        ferry_api::units::whole_units(s as u64)
    } else {
        format!("{s}s")
    }
}

/// `ferry predict`.
///
/// # Errors
/// Client and server errors, or inputs that do not fit the model.
pub async fn predict(args: PredictArgs) -> Result<()> {
    let api = RegistryClient::new(&args.serving, args.client.token.clone())?;
    let body: Value = if let Some(path) = &args.json {
        let text = if path.as_os_str() == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            s
        } else {
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?
        };
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?
    } else {
        if args.inputs.is_empty() {
            bail!("pass --input NAME=JSON (repeatable) or --json FILE");
        }
        let meta: Value = api
            .send_json(api.request(reqwest::Method::GET, api.url(&["v2", "models", &args.name])))
            .await?;
        let mut inputs = Vec::new();
        for spec in &args.inputs {
            let (name, data) = spec
                .split_once('=')
                .with_context(|| format!("--input `{spec}` is not NAME=JSON"))?;
            let data: Value = serde_json::from_str(data)
                .with_context(|| format!("--input {name}: the data is not JSON"))?;
            let declared = meta["inputs"]
                .as_array()
                .and_then(|list| list.iter().find(|i| i["name"] == name))
                .with_context(|| format!("model `{}` has no input `{name}`", args.name))?;
            inputs.push(json!({
                "name": name,
                "datatype": declared["datatype"],
                "shape": shape_of(&data, declared["shape"].as_array())?,
                "data": data,
            }));
        }
        json!({ "inputs": inputs })
    };
    let segments: Vec<&str> = match &args.model_version {
        Some(v) => vec!["v2", "models", &args.name, "versions", v, "infer"],
        None => vec!["v2", "models", &args.name, "infer"],
    };
    let mut request = api
        .request(reqwest::Method::POST, api.url(&segments))
        .json(&body);
    for h in &args.header {
        let (k, v) = h
            .split_once('=')
            .with_context(|| format!("--header `{h}` is not HEADER=VALUE"))?;
        request = request.header(k.trim(), v.trim());
    }
    let response = api.send(request).await?;
    let route = response
        .headers()
        .get("x-ferry-route")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let answer: Value = response.json().await.context("the answer is not JSON")?;
    if args.client.output == Output::Json {
        return output::json(&answer);
    }
    let id = answer["id"].as_str().unwrap_or(&request_id);
    crate::say!(
        "model {} version {} (route {route}), prediction id {id}",
        answer["model_name"].as_str().unwrap_or("-"),
        answer["model_version"].as_str().unwrap_or("-")
    );
    let mut table = Table::new(&["OUTPUT", "DATATYPE", "SHAPE", "DATA"]);
    for o in answer["outputs"].as_array().into_iter().flatten() {
        let data = o["data"].to_string();
        let shown: String = if data.chars().count() > 100 {
            format!("{}…", data.chars().take(100).collect::<String>())
        } else {
            data
        };
        table.row(vec![
            o["name"].as_str().unwrap_or("-").to_string(),
            o["datatype"].as_str().unwrap_or("-").to_string(),
            o["shape"].to_string(),
            shown,
        ]);
    }
    table.print();
    Ok(())
}

/// The shape of JSON data: its nesting when nested; for flat data, the model's shape with the
/// one dynamic dimension filled in.
fn shape_of(data: &Value, declared: Option<&Vec<Value>>) -> Result<Vec<i64>> {
    let mut shape = Vec::new();
    let mut cursor = data;
    while let Value::Array(items) = cursor {
        shape.push(i64::try_from(items.len())?);
        match items.first() {
            Some(first) => cursor = first,
            None => break,
        }
    }
    let declared: Vec<i64> = declared
        .map(|d| d.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    if shape.len() == 1 && declared.len() > 1 {
        // Flat data for a model of higher rank: fill the dynamic dimension.
        let fixed: i64 = declared.iter().filter(|d| **d > 0).product();
        let dynamic = declared.iter().filter(|d| **d < 0).count();
        if dynamic == 1 && fixed > 0 && shape[0] % fixed == 0 {
            let n = shape[0] / fixed;
            return Ok(declared
                .iter()
                .map(|d| if *d < 0 { n } else { *d })
                .collect());
        }
        if dynamic == 0 {
            return Ok(declared);
        }
    }
    Ok(shape)
}

/// `ferry feedback`.
///
/// # Errors
/// Client and server errors (404 for an unknown or expired id, 409 for a second feedback).
pub async fn feedback(args: FeedbackArgs) -> Result<()> {
    // clap requires both unless a subcommand is given.
    let (Some(name), Some(id)) = (&args.name, &args.id) else {
        bail!("pass the endpoint and the prediction id: ferry feedback NAME ID --reward R");
    };
    if args.reward.is_none() && args.label.is_none() {
        bail!("pass --reward R, --label L, or both");
    }
    let api = RegistryClient::new(&args.serving, args.client.token.clone())?;
    let mut body = json!({ "id": id });
    if let Some(r) = args.reward {
        body["reward"] = json!(r);
    }
    if let Some(l) = args.label {
        body["label"] = json!(l);
    }
    let answer: Value = api
        .send_json(
            api.request(
                reqwest::Method::POST,
                api.url(&["v2", "models", name, "feedback"]),
            )
            .json(&body),
        )
        .await?;
    if args.client.output == Output::Json {
        return output::json(&answer);
    }
    crate::say!(
        "feedback recorded for prediction {} (version {}, route {})",
        id,
        answer["model_version"].as_str().unwrap_or("-"),
        answer["route"].as_str().unwrap_or("-")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_come_from_nesting_or_fill_the_dynamic_dimension() {
        let declared = vec![json!(-1), json!(4)];
        assert_eq!(
            shape_of(&json!([[1, 2, 3, 4], [5, 6, 7, 8]]), Some(&declared)).unwrap(),
            vec![2, 4]
        );
        assert_eq!(
            shape_of(&json!([1, 2, 3, 4, 5, 6, 7, 8]), Some(&declared)).unwrap(),
            vec![2, 4]
        );
        assert_eq!(
            shape_of(&json!([1, 2, 3]), Some(&declared)).unwrap(),
            vec![3]
        );
        assert_eq!(
            shape_of(&json!([1, 2]), Some(&vec![json!(1), json!(2)])).unwrap(),
            vec![1, 2]
        );
    }

    #[test]
    fn percentages_print_without_noise() {
        assert_eq!(percent(0.05), "5");
        assert_eq!(percent(0.001), "0.1");
        assert_eq!(percent(1.0), "100");
    }
}
