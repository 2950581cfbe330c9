//! `ferry operator` and `ferry crdgen`.

use anyhow::{Context, Result, bail};
use ferry_operator::crdgen;

use crate::cli::{CrdgenArgs, OperatorArgs};

/// Runs the Kubernetes operator until SIGTERM or Ctrl+C.
///
/// # Errors
/// When Kubernetes cannot be reached, the CRD is missing, or the listener cannot bind.
pub async fn run(args: OperatorArgs) -> Result<()> {
    ferry_operator::run(ferry_operator::OperatorConfig {
        namespace: args.namespace.filter(|ns| !ns.trim().is_empty()),
        listen: args.listen,
        serving_image: args.serving_image,
        registry_timeout: args.registry_timeout,
        resync: args.resync,
        alias_resync: args.alias_resync,
        feedback_store: args.feedback_store,
        feature_store: args.feature_store,
        trust: ferry_operator::trust::Trust {
            registries: args.allowed_registries,
            images: args.allowed_images,
        },
    })
    .await
}

/// Writes (or checks, or prints) the CRD YAML.
///
/// # Errors
/// When a file cannot be written, or with `--check` when one is stale.
pub fn crdgen(args: CrdgenArgs) -> Result<()> {
    if args.stdout {
        crate::output::write_out(format_args!("{}", crdgen::crd_yaml()?));
        return Ok(());
    }
    if !args.root.join("deploy").is_dir() {
        bail!(
            "{} has no deploy/ folder: run in the repository root, or pass --root (or --stdout)",
            args.root.display()
        );
    }
    if args.check {
        let stale = crdgen::stale_crds(&args.root)?;
        if stale.is_empty() {
            crate::say!("the CRD YAML is current");
            return Ok(());
        }
        let list: Vec<String> = stale.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "stale CRD YAML (differs from operator/src/crd.rs): {}; run `ferry crdgen` and commit the result",
            list.join(", ")
        );
    }
    let written = crdgen::write_crds(&args.root).context("cannot write the CRD")?;
    for path in written {
        crate::say!("wrote {}", path.display());
    }
    Ok(())
}
