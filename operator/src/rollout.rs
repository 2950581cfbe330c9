//! The rollout engine: a pure state machine over plain data, with no kube types and no I/O.
//!
//! [`advance`] takes the rollout's state (kept in the resource's status), its configuration (from
//! the spec), the time, the version the spec asks for, the manual controls and, when a judgement
//! is due, the registry's analysis; it returns the next state, the actions to take and when to
//! look again. Same inputs, same output: a restarted operator that reads the status back resumes
//! exactly where the last one stopped, without repeating or skipping a step.
//!
//! # The saga
//! A new candidate (the spec's version changed, or the tracked alias moved) starts a rollout:
//! an optional **shadow** stage (the candidate gets copies of requests for `duration`, judged on
//! shadow agreement and drift), then the **canary steps** (each gives the candidate `weight`% of
//! requests, holds it for `pause`, then is judged), then **promotion** (stable := candidate,
//! canary removed). Every step's compensation is the same: the policy goes back to the stable
//! version alone (canary weight 0, candidate removed, stable unchanged). A failed check
//! compensates at once (phase `RolledBack`, the reason names the check); so does `abort`.
//!
//! # Judging
//! During a step the candidate is judged every `interval` (a failure rolls back at once) and at
//! the end of the hold; the step advances only on a pass at or after the end of its hold. Each
//! judgement uses the window `min(interval, time since the step started)`, so numbers from an
//! earlier, smaller weight do not leak into a later step ([`analysis_window`] tells the caller
//! which window to fetch). Too little traffic is *inconclusive*: the step waits another
//! `interval`. After `maxInconclusive` inconclusive judgements past the end of a hold the rollout
//! gives up, compensates, and ends `Failed` (reason `InconclusiveAnalysis`): a candidate nobody
//! could judge is not promoted, and is not left half-deployed forever either. `0` waits forever.
//!
//! # Manual controls (spec fields or annotations), strongest first
//! - `abort`: roll the current rollout back now (reason `Aborted`). While set, no rollout
//!   starts. Clearing it rolls the target out again from the first step, even the same version
//!   (this is also how to retry a version that was rolled back automatically: set and clear
//!   `abort`).
//! - `promoteNow`: promote the candidate now, skipping what is left of the analysis. While set,
//!   every new target is promoted at once, including one that was rolled back.
//! - `paused`: freeze. Nothing automatic happens (no judgement, no step, no new rollout); the
//!   current traffic split stays. On resume the current stage's hold starts again, so the step
//!   is judged on fresh numbers.
//!
//! # A new candidate during a rollout
//! The rollout restarts with the newest candidate: the old candidate is compensated (taken out
//! of the policy) and the new one enters the first stage in the same policy write, which the
//! registry applies atomically. If the target goes back to the stable version, the candidate is
//! withdrawn (phase `RolledBack`, reason `Withdrawn`).
//!
//! # Crash safety
//! The status is the saga's log. The caller writes the returned state to the status, then makes
//! the registry's policy equal to [`desired_policy`] of that state (idempotent, level-triggered:
//! it also repairs a policy someone else changed). A crash between the two is repaired by the
//! next reconcile; a crash before the status write repeats the same decision.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_api::records::{CanaryPolicy, EndpointPolicy, ShadowPolicy};
use ferry_api::traffic::EndpointAnalysis;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::verdict::{self, AnalysisRecord, Check, Evidence, Stage, Thresholds, Verdict};

/// How soon to try again when something outside the engine is missing (an unresolvable target
/// before the first deployment, an analysis the registry did not give).
pub const RETRY_AFTER: Duration = Duration::from_secs(15);

/// `status.reason` after `abort`.
pub const REASON_ABORTED: &str = "Aborted";
/// `status.reason` after the target went back to the stable version mid-rollout.
pub const REASON_WITHDRAWN: &str = "Withdrawn";
/// `status.reason` after too many inconclusive judgements.
pub const REASON_INCONCLUSIVE: &str = "InconclusiveAnalysis";

/// Where a `ModelDeployment` is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// No version deployed yet (the target is not resolved yet).
    #[default]
    Pending,
    /// A candidate receives copies of requests; its answers are compared, never returned.
    Shadowing,
    /// A candidate answers a share of requests, step by step.
    Progressing,
    /// Frozen by `paused`: `pausedPhase` says what it will resume.
    Paused,
    /// The stable version answers everything; no rollout in progress.
    Promoted,
    /// The last candidate was taken out of traffic; the stable version answers everything.
    RolledBack,
    /// The last rollout could not be judged and was compensated; the stable version answers
    /// everything.
    Failed,
}

/// A rollout's whole state: `status` of the resource holds exactly this (plus conditions and
/// `observedGeneration`), so a restarted operator resumes from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutState {
    /// Where the resource is.
    #[serde(default)]
    pub phase: Phase,
    /// While `Paused`: the phase to resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_phase: Option<Phase>,
    /// The version answering every request not sent to the candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_version: Option<i64>,
    /// The version being rolled out (or, after `RolledBack`/`Failed`, the one that was rolled
    /// back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_version: Option<i64>,
    /// The canary step in progress, from 1; absent while shadowing or when no rollout runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<u32>,
    /// Percent of requests the candidate answers now.
    #[serde(default)]
    pub current_weight: f64,
    /// When the current rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_started_at: Option<DateTime<Utc>>,
    /// When the current stage (shadow or step) started, or resumed after a pause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<DateTime<Utc>>,
    /// Inconclusive judgements in a row past the end of the current stage's hold.
    #[serde(default)]
    pub inconclusive_analyses: u32,
    /// The newest judgement, with every check's value and threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis: Option<AnalysisRecord>,
    /// Why the phase is what it is, one CamelCase word (`ErrorRateTooHigh`, `Promoted`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The same for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl RolloutState {
    /// The phase under a pause (the phase itself otherwise).
    pub fn effective_phase(&self) -> Phase {
        match self.phase {
            Phase::Paused => self.paused_phase.unwrap_or(Phase::Pending),
            phase => phase,
        }
    }

    /// Whether a rollout is in progress (shadowing or stepping, paused or not).
    pub fn is_rolling_out(&self) -> bool {
        matches!(
            self.effective_phase(),
            Phase::Shadowing | Phase::Progressing
        ) && self.stable_version.is_some()
            && self.candidate_version.is_some()
    }
}

/// The shadow stage's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowConfig {
    /// How long the candidate shadows before it is judged.
    pub duration: Duration,
    /// Share of requests mirrored to it, 0..1.
    pub sample_rate: f64,
}

/// One canary step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepConfig {
    /// Percent of requests the candidate answers, (0, 100].
    pub weight: f64,
    /// How long the step is held before it is judged for the last time.
    pub pause: Duration,
}

/// A rollout's configuration: the spec, validated and parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutConfig {
    /// The model whose versions are rolled out.
    pub model: String,
    /// The optional shadow stage.
    pub shadow: Option<ShadowConfig>,
    /// The canary steps, with increasing weights; at least one.
    pub steps: Vec<StepConfig>,
    /// How often, and over what window, the candidate is judged.
    pub interval: Duration,
    /// Inconclusive judgements past a hold before the rollout fails; 0 waits forever.
    pub max_inconclusive: u32,
    /// The thresholds of the checks.
    pub thresholds: Thresholds,
    /// The stable version counts as stale once older than this (the endpoint's
    /// `max_age_seconds`); `None` leaves the endpoint's own setting alone.
    pub max_age: Option<Duration>,
}

/// Which version the spec asks for, as resolved against the registry by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// This version.
    Version(i64),
    /// Not known now (the alias does not exist, the registry is unreachable): the engine
    /// keeps what runs and starts nothing.
    Unresolved(String),
}

/// The manual controls (spec fields or annotations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Controls {
    /// Freeze the rollout.
    pub paused: bool,
    /// Roll back now; start nothing while set.
    pub abort: bool,
    /// Promote the candidate now.
    pub promote_now: bool,
}

/// What the registry said about the endpoint, fetched over [`analysis_window`].
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The endpoint's analysis.
    pub analysis: &'a EndpointAnalysis,
    /// Drift score of live inputs from the candidate's training profile, when known.
    pub candidate_drift: Option<f64>,
}

/// Everything [`advance`] looks at besides the state and configuration.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The time of this decision.
    pub now: DateTime<Utc>,
    /// The version the spec asks for.
    pub target: Target,
    /// Manual controls.
    pub controls: Controls,
    /// The analysis, when [`analysis_window`] asked for one and the registry answered.
    pub observation: Option<Observation<'a>>,
}

/// Kubernetes Event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something went wrong.
    Warning,
}

/// What happened to a rollout, for the registry's `rollout.step` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutEvent {
    /// CamelCase, as the Kubernetes Event's reason (`RolloutStarted`, `StepAdvanced`,
    /// `Promoted`, `ErrorRateTooHigh`, …).
    pub reason: String,
    /// For humans.
    pub message: String,
    /// The model.
    pub model: String,
    /// The phase after the change.
    pub phase: Phase,
    /// The stable version after the change.
    pub stable: Option<i64>,
    /// The candidate after the change.
    pub candidate: Option<i64>,
    /// The canary step after the change, from 1.
    pub step: Option<u32>,
    /// Percent of requests the candidate answers after the change.
    pub weight: f64,
    /// The analysis judged in the same pass, when the change followed from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisRecord>,
}

/// Something the caller must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Make the endpoint's policy this (it is also [`desired_policy`] of the new state).
    SetPolicy(EndpointPolicy),
    /// Record a Kubernetes Event on the resource.
    RecordEvent {
        /// Normal or Warning.
        event_type: EventType,
        /// CamelCase reason.
        reason: String,
        /// For humans.
        message: String,
    },
    /// Append a `rollout.step` event to the registry's log for the endpoint.
    RegistryEvent(RolloutEvent),
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The next state: write it to the status.
    pub state: RolloutState,
    /// What to do, in order.
    pub actions: Vec<Action>,
    /// When to run again if nothing else happens first; `None` when nothing is pending on time.
    pub requeue_after: Option<Duration>,
}

/// The policy the endpoint should have in `state`; `None` before any version is deployed.
pub fn desired_policy(config: &RolloutConfig, state: &RolloutState) -> Option<EndpointPolicy> {
    let stable = state.stable_version?;
    let mut policy = EndpointPolicy {
        model: config.model.clone(),
        stable,
        canary: None,
        shadows: Vec::new(),
        sticky_header: None,
        drift: None,
        max_age_seconds: config.max_age.map(|d| d.as_secs()),
        decay: None,
    };
    match (state.effective_phase(), state.candidate_version) {
        (Phase::Shadowing, Some(candidate)) if candidate != stable => {
            policy.shadows.push(ShadowPolicy {
                version: candidate,
                sample_rate: config.shadow.as_ref().map_or(1.0, |s| s.sample_rate),
            });
        }
        (Phase::Progressing, Some(candidate)) if candidate != stable => {
            policy.canary = Some(CanaryPolicy {
                version: candidate,
                weight: fraction(state.current_weight),
            });
        }
        _ => {}
    }
    Some(policy)
}

/// The window to fetch the endpoint's analysis over when a judgement is due now; `None` when
/// no judgement is due (no rollout, paused, or the next one is later).
pub fn analysis_window(
    config: &RolloutConfig,
    state: &RolloutState,
    now: DateTime<Utc>,
) -> Option<Duration> {
    if state.phase == Phase::Paused || !state.is_rolling_out() {
        return None;
    }
    let started = state.step_started_at?;
    if now < next_judgement(config, state, started) {
        return None;
    }
    Some(judgement_window(config, started, now))
}

/// Decides what happens next. See the module docs for the rules.
pub fn advance(config: &RolloutConfig, state: &RolloutState, inputs: &Inputs<'_>) -> Decision {
    let mut run = Run {
        config,
        now: inputs.now,
        state: state.clone(),
        actions: Vec::new(),
    };
    // Work on the phase under a pause; the pause is put back below if it still holds.
    let was_paused = state.phase == Phase::Paused;
    run.state.phase = state.effective_phase();
    run.state.paused_phase = None;
    let target = match &inputs.target {
        Target::Version(v) => Some(*v),
        Target::Unresolved(_) => None,
    };
    let controls = inputs.controls;

    if controls.abort {
        if run.state.is_rolling_out() {
            let message = format!(
                "aborted: {} rolled back{}; {} keeps all traffic",
                v(run.state.candidate_version),
                run.where_(),
                v(run.state.stable_version)
            );
            run.compensate(
                Phase::RolledBack,
                REASON_ABORTED,
                message,
                EventType::Warning,
            );
        } else if let Some(t) =
            target.filter(|t| run.would_start(*t) && Some(*t) != run.state.candidate_version)
        {
            run.state.message = Some(format!(
                "{} waits: spec.abort (or the ferry.dev/abort annotation) is set",
                v(Some(t))
            ));
        }
        return run.finish(None);
    }

    if controls.promote_now {
        if run.state.is_rolling_out() {
            let candidate = run.state.candidate_version;
            run.promote(candidate, "PromotedManually", "promoted by promoteNow");
            return run.finish(None);
        }
        if let Some(t) = target.filter(|t| run.state.stable_version != Some(*t)) {
            run.promote(Some(t), "PromotedManually", "promoted by promoteNow");
            return run.finish(None);
        }
    }

    if controls.paused {
        let waiting = target.filter(|t| run.would_start(*t));
        if run.state.is_rolling_out() || waiting.is_some() {
            let message = match waiting {
                Some(t) if !run.state.is_rolling_out() => {
                    format!("paused: {} waits to roll out", v(Some(t)))
                }
                _ => format!("paused{}", run.where_()),
            };
            run.state.paused_phase = Some(run.state.phase);
            run.state.phase = Phase::Paused;
            run.state.message = Some(message.clone());
            if !was_paused {
                run.event(EventType::Normal, "Paused", message);
            }
        }
        return run.finish(None);
    }

    if was_paused {
        if run.state.is_rolling_out() {
            // Numbers from before the pause are stale: the stage is held and judged afresh.
            run.state.step_started_at = Some(run.now);
            run.state.inconclusive_analyses = 0;
            let message = format!("resumed{}", run.where_());
            run.state.reason = Some("Resumed".into());
            run.state.message = Some(message.clone());
            run.event(EventType::Normal, "Resumed", message);
        } else {
            run.event(EventType::Normal, "Resumed", "resumed".into());
        }
    }

    let Some(target) = target else {
        if run.state.stable_version.is_none() {
            run.state.phase = Phase::Pending;
            run.state.reason = Some("TargetUnresolved".into());
            if let Target::Unresolved(why) = &inputs.target {
                run.state.message = Some(why.clone());
            }
            return run.finish(Some(RETRY_AFTER));
        }
        // Static stability: what runs keeps running, and a rollout in progress goes on.
        return run.progress(inputs.observation);
    };

    let Some(stable) = run.state.stable_version else {
        run.promote(Some(target), "Deployed", "first version deployed");
        return run.finish(None);
    };
    if run.state.is_rolling_out() {
        if run.state.candidate_version != Some(target) {
            if target == stable {
                let message = format!(
                    "{} withdrawn{}: the target is back to the stable {}",
                    v(run.state.candidate_version),
                    run.where_(),
                    v(Some(stable))
                );
                // Not judged bad, so not kept as the rolled-back candidate: asking for it again
                // rolls it out again.
                run.state.candidate_version = None;
                run.compensate(
                    Phase::RolledBack,
                    REASON_WITHDRAWN,
                    message,
                    EventType::Normal,
                );
                return run.finish(None);
            }
            let message = format!(
                "{} superseded by {}{}",
                v(run.state.candidate_version),
                v(Some(target)),
                run.where_()
            );
            run.event(EventType::Normal, "Superseded", message);
            return run.start(target);
        }
    } else if run.would_start(target) {
        return run.start(target);
    }
    run.progress(inputs.observation)
}

/// One decision in the making.
struct Run<'c> {
    config: &'c RolloutConfig,
    now: DateTime<Utc>,
    state: RolloutState,
    actions: Vec<Action>,
}

impl Run<'_> {
    /// Whether `target` would start a rollout from the current (not rolling) state: it differs
    /// from the stable version and was not rolled back automatically.
    fn would_start(&self, target: i64) -> bool {
        if self.state.is_rolling_out() || self.state.stable_version == Some(target) {
            return false;
        }
        let rejected = matches!(self.state.phase, Phase::RolledBack | Phase::Failed)
            && self.state.candidate_version == Some(target)
            && self.state.reason.as_deref() != Some(REASON_ABORTED);
        !rejected
    }

    fn start(mut self, candidate: i64) -> Decision {
        let s = &mut self.state;
        s.candidate_version = Some(candidate);
        s.rollout_started_at = Some(self.now);
        s.step_started_at = Some(self.now);
        s.inconclusive_analyses = 0;
        let stable = v(s.stable_version);
        let message = match &self.config.shadow {
            Some(shadow) => {
                s.phase = Phase::Shadowing;
                s.current_step = None;
                s.current_weight = 0.0;
                format!(
                    "rolling out {} over {stable}: shadowing {}% of requests for {}",
                    v(Some(candidate)),
                    verdict::num(shadow.sample_rate * 100.0),
                    ferry_api::units::format_duration(shadow.duration)
                )
            }
            None => {
                s.phase = Phase::Progressing;
                s.current_step = Some(1);
                s.current_weight = self.config.steps.first().map_or(100.0, |st| st.weight);
                format!(
                    "rolling out {} over {stable}: step 1/{} at {}%",
                    v(Some(candidate)),
                    self.config.steps.len(),
                    verdict::num(s.current_weight)
                )
            }
        };
        self.state.reason = Some("RolloutStarted".into());
        self.state.message = Some(message.clone());
        self.set_policy();
        self.event(EventType::Normal, "RolloutStarted", message);
        let started = self.now;
        let due = next_judgement(self.config, &self.state, started);
        self.wait_until(due)
    }

    /// Judges the stage in progress if a judgement is due; otherwise waits for it.
    fn progress(mut self, observation: Option<Observation<'_>>) -> Decision {
        if !self.state.is_rolling_out() {
            return self.finish(None);
        }
        let (Some(stable), Some(candidate)) =
            (self.state.stable_version, self.state.candidate_version)
        else {
            return self.finish(None);
        };
        let started = *self.state.step_started_at.get_or_insert(self.now);
        let due = next_judgement(self.config, &self.state, started);
        if self.now < due {
            return self.wait_until(due);
        }
        let Some(observation) = observation else {
            // The caller could not get the analysis: nothing is judged on missing numbers.
            let retry = RETRY_AFTER.min(self.config.interval);
            return self.finish(Some(retry));
        };
        let stage = current_stage(&self.state);
        let evidence = Evidence::from_analysis(
            observation.analysis,
            stable,
            candidate,
            observation.candidate_drift,
        );
        let judgement = verdict::judge(stage, &self.config.thresholds, &evidence);
        let step = self.state.current_step;
        self.state.last_analysis = Some(AnalysisRecord {
            at: self.now,
            stage,
            step,
            candidate_version: candidate,
            stable_version: stable,
            window_seconds: observation.analysis.window_seconds,
            verdict: judgement.verdict,
            decided_by: judgement.decided_by,
            summary: judgement.summary.clone(),
            checks: judgement.checks,
        });
        let hold_over = self.now >= started + hold(self.config, &self.state);
        match judgement.verdict {
            Verdict::Failed => {
                let check = judgement.decided_by.unwrap_or(Check::SampleSize);
                let message = format!(
                    "{} rolled back{}: {}; {} keeps all traffic",
                    v(Some(candidate)),
                    self.where_(),
                    judgement.summary,
                    v(Some(stable))
                );
                self.compensate(
                    Phase::RolledBack,
                    check.failure_reason(),
                    message,
                    EventType::Warning,
                );
                self.finish(None)
            }
            Verdict::Passed if hold_over => self.next_stage(),
            Verdict::Inconclusive if hold_over => {
                self.state.inconclusive_analyses += 1;
                let cap = self.config.max_inconclusive;
                if cap > 0 && self.state.inconclusive_analyses >= cap {
                    let message = format!(
                        "{} could not be judged after {cap} analyses{} ({}); rolled back, {} keeps all traffic",
                        v(Some(candidate)),
                        self.where_(),
                        judgement.summary,
                        v(Some(stable))
                    );
                    self.compensate(
                        Phase::Failed,
                        REASON_INCONCLUSIVE,
                        message,
                        EventType::Warning,
                    );
                    return self.finish(None);
                }
                self.state.reason = Some("WaitingForTraffic".into());
                self.state.message = Some(format!(
                    "{}: {} (analysis {} of {})",
                    self.stage_label().unwrap_or_default(),
                    judgement.summary,
                    self.state.inconclusive_analyses,
                    if cap == 0 {
                        "unlimited".to_string()
                    } else {
                        cap.to_string()
                    }
                ));
                let due = next_judgement(self.config, &self.state, started);
                self.wait_until(due)
            }
            // A pass or an inconclusive judgement inside the hold: hold on.
            Verdict::Passed | Verdict::Inconclusive => {
                let due = next_judgement(self.config, &self.state, started);
                self.wait_until(due)
            }
        }
    }

    /// The current stage passed: the next step, or promotion after the last.
    fn next_stage(mut self) -> Decision {
        let next = match (self.state.phase, self.state.current_step) {
            (Phase::Shadowing, _) => 1,
            (_, Some(step)) => step + 1,
            (_, None) => 1,
        };
        let Some(step) = self.config.steps.get(next as usize - 1) else {
            let candidate = self.state.candidate_version;
            self.promote(candidate, "Promoted", "every step passed");
            return self.finish(None);
        };
        let s = &mut self.state;
        s.phase = Phase::Progressing;
        s.current_step = Some(next);
        s.current_weight = step.weight;
        s.step_started_at = Some(self.now);
        s.inconclusive_analyses = 0;
        let message = format!(
            "{} passed; step {next}/{} at {}%",
            if next == 1 && self.config.shadow.is_some() {
                "shadow".to_string()
            } else {
                format!("step {}", next - 1)
            },
            self.config.steps.len(),
            verdict::num(step.weight)
        );
        self.state.reason = Some("StepAdvanced".into());
        self.state.message = Some(format!("{}: {message}", v(self.state.candidate_version)));
        self.set_policy();
        self.event(
            EventType::Normal,
            "StepAdvanced",
            format!("{}: {message}", v(self.state.candidate_version)),
        );
        let due = next_judgement(self.config, &self.state, self.now);
        self.wait_until(due)
    }

    /// stable := `version`; no candidate, no canary.
    fn promote(&mut self, version: Option<i64>, reason: &str, why: &str) {
        let previous = self.state.stable_version;
        let s = &mut self.state;
        s.stable_version = version;
        s.candidate_version = None;
        s.phase = Phase::Promoted;
        s.current_step = None;
        s.current_weight = 0.0;
        s.step_started_at = None;
        s.inconclusive_analyses = 0;
        let message = match previous {
            Some(p) if Some(p) != version => {
                format!("{} promoted over {} ({why})", v(version), v(Some(p)))
            }
            _ => format!("{} serves all traffic ({why})", v(version)),
        };
        s.reason = Some(reason.into());
        s.message = Some(message.clone());
        self.set_policy();
        self.event(EventType::Normal, reason, message);
    }

    /// The saga's compensation: the stable version alone, the candidate kept on record.
    fn compensate(&mut self, phase: Phase, reason: &str, message: String, event_type: EventType) {
        let s = &mut self.state;
        s.phase = phase;
        s.current_step = None;
        s.current_weight = 0.0;
        s.step_started_at = None;
        s.inconclusive_analyses = 0;
        s.reason = Some(reason.into());
        s.message = Some(message.clone());
        self.set_policy();
        self.event(event_type, reason, message);
    }

    fn set_policy(&mut self) {
        if let Some(policy) = desired_policy(self.config, &self.state) {
            self.actions.push(Action::SetPolicy(policy));
        }
    }

    fn event(&mut self, event_type: EventType, reason: &str, message: String) {
        self.actions.push(Action::RecordEvent {
            event_type,
            reason: reason.into(),
            message: message.clone(),
        });
        self.actions.push(Action::RegistryEvent(RolloutEvent {
            reason: reason.into(),
            message,
            model: self.config.model.clone(),
            phase: self.state.phase,
            stable: self.state.stable_version,
            candidate: self.state.candidate_version,
            step: self.state.current_step,
            weight: self.state.current_weight,
            analysis: self
                .state
                .last_analysis
                .as_ref()
                .filter(|a| a.at == self.now)
                .cloned(),
        }));
    }

    /// `step 2/4 (10%)` or `shadowing`, for messages; `None` outside a rollout.
    fn stage_label(&self) -> Option<String> {
        match (self.state.phase, self.state.current_step) {
            (Phase::Shadowing, _) => Some("shadowing".into()),
            (Phase::Progressing, Some(step)) => Some(format!(
                "step {step}/{} ({}%)",
                self.config.steps.len(),
                verdict::num(self.state.current_weight)
            )),
            _ => None,
        }
    }

    /// ` at step 2/4 (10%)` or ` while shadowing`, for messages.
    fn where_(&self) -> String {
        match self.stage_label() {
            Some(label) if self.state.phase == Phase::Shadowing => format!(" while {label}"),
            Some(label) => format!(" at {label}"),
            None => String::new(),
        }
    }

    /// Nothing more to do before `due`.
    fn wait_until(self, due: DateTime<Utc>) -> Decision {
        let after = until(self.now, due);
        self.finish(Some(after))
    }

    fn finish(self, requeue_after: Option<Duration>) -> Decision {
        Decision {
            state: self.state,
            actions: self.actions,
            requeue_after,
        }
    }
}

fn current_stage(state: &RolloutState) -> Stage {
    if state.effective_phase() == Phase::Shadowing {
        Stage::Shadow
    } else {
        Stage::Canary
    }
}

/// How long the current stage is held.
fn hold(config: &RolloutConfig, state: &RolloutState) -> chrono::Duration {
    let hold = match current_stage(state) {
        Stage::Shadow => config.shadow.as_ref().map(|s| s.duration),
        Stage::Canary => state
            .current_step
            .and_then(|step| config.steps.get((step as usize).saturating_sub(1)))
            .map(|s| s.pause),
    };
    chrono_duration(hold.unwrap_or_default())
}

/// When the current stage is next judged: every `interval` from its start, and at the end of
/// its hold.
fn next_judgement(
    config: &RolloutConfig,
    state: &RolloutState,
    started: DateTime<Utc>,
) -> DateTime<Utc> {
    let interval = chrono_duration(config.interval);
    let hold_end = started + hold(config, state);
    let stage = current_stage(state);
    let last = state
        .last_analysis
        .as_ref()
        .filter(|r| {
            r.stage == stage
                && r.step == state.current_step
                && Some(r.candidate_version) == state.candidate_version
                && r.at >= started
        })
        .map(|r| r.at);
    match last {
        None => (started + interval).min(hold_end),
        Some(at) if at < hold_end => (at + interval).min(hold_end),
        Some(at) => at + interval,
    }
}

fn judgement_window(
    config: &RolloutConfig,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Duration {
    let since = (now - started).to_std().unwrap_or_default();
    since.min(config.interval).max(Duration::from_secs(1))
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Time from `now` to `at`, at least a second (a requeue of zero would spin).
fn until(now: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
    (at - now)
        .to_std()
        .unwrap_or_default()
        .max(Duration::from_secs(1))
}

/// Percent → the registry's 0..1 weight, on its 1/1000 grid.
fn fraction(percent: f64) -> f64 {
    ((percent * 10.0).round() / 1000.0).clamp(0.0, 1.0)
}

/// `v7`, or `?` for none, for messages.
fn v(version: Option<i64>) -> String {
    version.map_or_else(|| "?".into(), |n| format!("v{n}"))
}

#[cfg(test)]
mod tests;
