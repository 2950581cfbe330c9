//! `ferry profile`, and `ferry model push --profile-data`: the training-data profile drift is
//! measured against.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ferry_api::drift::{Header, Profile, ProfileOptions, profile_file};
use ferry_api::onnx::{Dim, ModelSignature, OnnxScanner};

use crate::cli::{Output, ProfileArgs};
use crate::output::{self, Table};

/// Runs `ferry profile`.
///
/// # Errors
/// Unreadable or malformed data, a model whose inputs do not fit the data.
pub async fn run(args: ProfileArgs) -> Result<()> {
    let names = args.feature_names.as_deref().map(|n| {
        n.split(',')
            .map(|s| s.trim().to_string())
            .collect::<Vec<_>>()
    });
    let profile = build(
        &args.data,
        args.model.as_deref(),
        args.input.as_deref(),
        names,
        args.bins,
        args.no_header,
    )
    .await?;
    let json = serde_json::Value::Object(profile.to_metadata());
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.output == Output::Json {
        return output::json(&json);
    }
    let mut table = Table::new(&[
        "INPUT", "FEATURE", "COLUMN", "BINS", "MEAN", "STD", "MIN", "MAX",
    ]);
    for input in &profile.inputs {
        for f in &input.features {
            table.row(vec![
                input.input.clone(),
                f.name.clone(),
                f.column.to_string(),
                f.counts.len().saturating_sub(2).to_string(),
                format!("{:.4}", f.summary.mean),
                format!("{:.4}", f.summary.std),
                format!("{:.4}", f.summary.min),
                format!("{:.4}", f.summary.max),
            ]);
        }
    }
    table.print();
    if let Some(path) = &args.out {
        crate::say!("profile written to {}", path.display());
    }
    Ok(())
}

/// Builds the profile of `data` (CSV or Parquet, one column per feature) for the model's tabular input:
/// `input` when named, else the model's first input of rank 2, else `input`.
///
/// # Errors
/// As [`run`].
pub async fn build(
    data: &Path,
    model: Option<&Path>,
    input: Option<&str>,
    feature_names: Option<Vec<String>>,
    bins: Option<usize>,
    no_header: bool,
) -> Result<Profile> {
    let signature = match model {
        Some(path) => Some(signature_of(path.to_path_buf()).await?),
        None => None,
    };
    let (input, width) = pick_input(signature.as_ref(), input)?;
    let mut options = ProfileOptions {
        feature_names,
        ..ProfileOptions::default()
    };
    if let Some(b) = bins {
        options.bins = b;
    }
    if no_header {
        options.header = Header::Absent;
    }
    let data = data.to_path_buf();
    let name = input.clone();
    let profiled = tokio::task::spawn_blocking(move || profile_file(&data, &name, &options))
        .await?
        .with_context(|| format!("profiling {}", input))?;
    let profile = Profile::new(vec![profiled]);
    if let (Some(width), Some(p)) = (width, profile.inputs.first())
        && p.min_row_width() > width
    {
        bail!(
            "the data has {} columns but input `{input}` takes {width} features per row",
            p.min_row_width()
        );
    }
    Ok(profile)
}

/// The input a profile describes, and its row width when the model fixes it.
fn pick_input(
    signature: Option<&ModelSignature>,
    requested: Option<&str>,
) -> Result<(String, Option<usize>)> {
    let Some(signature) = signature else {
        return Ok((requested.unwrap_or("input").to_string(), None));
    };
    let spec = match requested {
        Some(name) => signature
            .inputs
            .iter()
            .find(|i| i.name == name)
            .with_context(|| {
                format!(
                    "the model has no input `{name}`; its inputs are {}",
                    signature
                        .inputs
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
        None => signature
            .inputs
            .iter()
            .find(|i| i.shape.as_ref().is_some_and(|s| s.len() == 2))
            .context("the model has no tabular ([rows, features]) input; name one with --input")?,
    };
    let width = spec.shape.as_ref().and_then(|s| match s.get(1) {
        Some(Dim::Fixed(n)) => usize::try_from(*n).ok(),
        _ => None,
    });
    Ok((spec.name.clone(), width))
}

/// Reads an ONNX file's signature, streaming (models can be gigabytes).
async fn signature_of(path: PathBuf) -> Result<ModelSignature> {
    tokio::task::spawn_blocking(move || -> Result<ModelSignature> {
        let mut file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut scanner = OnnxScanner::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            scanner
                .feed(&buf[..n])
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        scanner
            .finish()
            .map_err(|e| anyhow::anyhow!("{} is not a valid ONNX model: {e}", path.display()))
    })
    .await?
}
