//! Ferry operator: the `ModelDeployment` resource and progressive rollouts (see issue 6; not built yet).
