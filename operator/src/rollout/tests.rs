//! Table-driven tests of the rollout engine: a simulated clock, an endpoint analysis made to
//! order, and the engine's decisions read back like the reconcile loop would.

use ferry_api::traffic::{EndpointAnalysis, VersionAnalysis};

use super::*;

const STABLE: i64 = 1;
const CANDIDATE: i64 = 2;

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
}

fn minutes(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

/// Four steps 1 → 10 → 50 → 100 %, each held a minute, judged every minute, three
/// inconclusive judgements allowed.
fn config() -> RolloutConfig {
    RolloutConfig {
        model: "iris".into(),
        shadow: None,
        steps: [1.0, 10.0, 50.0, 100.0]
            .into_iter()
            .map(|weight| StepConfig {
                weight,
                pause: minutes(1),
            })
            .collect(),
        interval: minutes(1),
        max_inconclusive: 3,
        thresholds: Thresholds {
            min_requests: 50,
            min_rewards: 20,
            max_error_rate: 0.01,
            max_latency_p99_ms: 500.0,
            min_shadow_agreement: 0.9,
            min_reward_ratio: 0.95,
            max_drift: 0.25,
        },
        max_age: None,
    }
}

fn with_shadow() -> RolloutConfig {
    RolloutConfig {
        shadow: Some(ShadowConfig {
            duration: minutes(2),
            sample_rate: 0.5,
        }),
        ..config()
    }
}

/// What one version did in a window.
#[derive(Debug, Clone, Copy)]
struct Health {
    requests: u64,
    errors: u64,
    p99_ms: f64,
    rewards: u64,
    reward_mean: f64,
    compared: u64,
    agreement: Option<f64>,
}

fn good() -> Health {
    Health {
        requests: 200,
        errors: 0,
        p99_ms: 20.0,
        rewards: 100,
        reward_mean: 1.0,
        compared: 200,
        agreement: Some(0.99),
    }
}

fn quiet() -> Health {
    Health {
        requests: 3,
        compared: 3,
        rewards: 0,
        ..good()
    }
}

fn version_analysis(version: i64, role: &str, h: Health) -> VersionAnalysis {
    let attempts = h.requests + h.errors;
    VersionAnalysis {
        version,
        role: role.into(),
        requests: h.requests,
        errors: h.errors,
        error_rate: (attempts > 0).then(|| h.errors as f64 / attempts as f64),
        latency_p50_ms: (h.requests > 0).then_some(h.p99_ms / 2.0),
        latency_p99_ms: (h.requests > 0).then_some(h.p99_ms),
        shadow_agreement: h.agreement.filter(|_| h.compared > 0),
        shadow_compared: h.compared,
        reward_mean: (h.rewards > 0).then_some(h.reward_mean),
        reward_count: h.rewards,
        ..VersionAnalysis::default()
    }
}

/// A reconcile loop in miniature: keeps the state as the status would, asks
/// [`analysis_window`] whether to fetch an analysis, and feeds the engine.
struct Sim {
    config: RolloutConfig,
    state: RolloutState,
    target: Target,
    controls: Controls,
    stable: Health,
    candidate: Health,
    drift: Option<f64>,
    load_error: Option<String>,
    /// Every canary weight (0..1) any policy written so far gave the candidate.
    weights: Vec<f64>,
}

impl Sim {
    /// v1 is stable; nothing is rolling out.
    fn new(config: RolloutConfig) -> Self {
        Sim {
            config,
            state: RolloutState {
                phase: Phase::Promoted,
                stable_version: Some(STABLE),
                reason: Some("Deployed".into()),
                ..RolloutState::default()
            },
            target: Target::Version(STABLE),
            controls: Controls::default(),
            stable: good(),
            candidate: good(),
            drift: None,
            load_error: None,
            weights: Vec::new(),
        }
    }

    fn analysis(&self, window: Duration) -> EndpointAnalysis {
        let candidate = self.state.candidate_version.unwrap_or(CANDIDATE);
        EndpointAnalysis {
            endpoint: "iris".into(),
            window_seconds: window.as_secs_f64(),
            replicas: vec!["pod-a".into()],
            versions: vec![
                version_analysis(STABLE, "stable", self.stable),
                version_analysis(candidate, "canary", self.candidate),
            ],
            load_error: self.load_error.clone(),
        }
    }

    /// One reconcile at `seconds`.
    fn tick(&mut self, seconds: i64) -> Decision {
        let now = at(seconds);
        let analysis = analysis_window(&self.config, &self.state, now).map(|w| self.analysis(w));
        let decision = advance(
            &self.config,
            &self.state,
            &Inputs {
                now,
                target: self.target.clone(),
                controls: self.controls,
                observation: analysis.as_ref().map(|analysis| Observation {
                    analysis,
                    candidate_drift: self.drift,
                }),
            },
        );
        for policy in policies(&decision) {
            self.weights
                .push(policy.canary.as_ref().map_or(0.0, |c| c.weight));
        }
        self.state = decision.state.clone();
        decision
    }

    /// Reconciles whenever the engine asks to, from `from` up to and including `until`
    /// seconds; returns every decision with its time.
    fn run(&mut self, from: i64, until: i64) -> Vec<(i64, Decision)> {
        let mut out = Vec::new();
        let mut t = from;
        while t <= until {
            let decision = self.tick(t);
            let next = decision.requeue_after.map(|d| t + d.as_secs() as i64);
            out.push((t, decision));
            match next {
                Some(n) => t = n,
                None => break,
            }
        }
        out
    }

    /// Starts rolling out v2 at `seconds`.
    fn start_candidate(&mut self, seconds: i64) -> Decision {
        self.target = Target::Version(CANDIDATE);
        self.tick(seconds)
    }
}

fn policies(decision: &Decision) -> Vec<&EndpointPolicy> {
    decision
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::SetPolicy(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn event_reasons(decision: &Decision) -> Vec<&str> {
    decision
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::RecordEvent { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
        .collect()
}

fn stable_only(version: i64) -> EndpointPolicy {
    EndpointPolicy {
        model: "iris".into(),
        stable: version,
        canary: None,
        shadows: Vec::new(),
        sticky_header: None,
        drift: None,
        max_age_seconds: None,
        decay: None,
    }
}

fn canary(weight: f64) -> EndpointPolicy {
    EndpointPolicy {
        canary: Some(CanaryPolicy {
            version: CANDIDATE,
            weight,
        }),
        ..stable_only(STABLE)
    }
}

#[test]
fn a_good_candidate_is_promoted_through_every_step() {
    let mut sim = Sim::new(config());
    let start = sim.start_candidate(0);
    assert_eq!(start.state.phase, Phase::Progressing);
    assert_eq!(start.state.current_step, Some(1));
    assert_eq!(policies(&start), vec![&canary(0.01)]);
    assert_eq!(event_reasons(&start), vec!["RolloutStarted"]);
    assert_eq!(start.requeue_after, Some(minutes(1)));

    let run = sim.run(60, 600);
    let steps: Vec<(i64, Phase, Option<u32>, f64)> = run
        .iter()
        .map(|(t, d)| {
            (
                *t,
                d.state.phase,
                d.state.current_step,
                d.state.current_weight,
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            (60, Phase::Progressing, Some(2), 10.0),
            (120, Phase::Progressing, Some(3), 50.0),
            (180, Phase::Progressing, Some(4), 100.0),
            (240, Phase::Promoted, None, 0.0),
        ]
    );
    assert_eq!(sim.weights, vec![0.01, 0.1, 0.5, 1.0, 0.0]);
    let last = &run[3].1;
    assert_eq!(policies(last), vec![&stable_only(CANDIDATE)]);
    assert_eq!(event_reasons(last), vec!["Promoted"]);
    assert_eq!(last.requeue_after, None);
    assert_eq!(sim.state.stable_version, Some(CANDIDATE));
    assert_eq!(sim.state.candidate_version, None);
    assert_eq!(sim.state.reason.as_deref(), Some("Promoted"));
    let analysis = sim.state.last_analysis.as_ref().unwrap();
    assert_eq!(
        (analysis.verdict, analysis.step, analysis.stage),
        (Verdict::Passed, Some(4), Stage::Canary)
    );
    // The promotion's registry event carries the analysis that decided it, with every check.
    let promoted = last
        .actions
        .iter()
        .find_map(|a| match a {
            Action::RegistryEvent(e) if e.reason == "Promoted" => Some(e),
            _ => None,
        })
        .expect("a Promoted registry event");
    assert_eq!(promoted.analysis.as_ref(), Some(analysis));
    assert!(analysis.checks.len() > 1, "{:?}", analysis.checks);
    // Settled: nothing more happens.
    let after = sim.tick(900);
    assert!(after.actions.is_empty());
    assert_eq!(after.state, sim.state);
}

#[test]
fn a_good_candidate_shadows_first_then_steps_then_is_promoted() {
    let mut sim = Sim::new(with_shadow());
    let start = sim.start_candidate(0);
    assert_eq!(start.state.phase, Phase::Shadowing);
    assert_eq!(start.state.current_step, None);
    let expected = EndpointPolicy {
        shadows: vec![ShadowPolicy {
            version: CANDIDATE,
            sample_rate: 0.5,
        }],
        ..stable_only(STABLE)
    };
    assert_eq!(policies(&start), vec![&expected]);

    let run = sim.run(60, 900);
    let phases: Vec<(i64, Phase, Option<u32>)> = run
        .iter()
        .map(|(t, d)| (*t, d.state.phase, d.state.current_step))
        .collect();
    assert_eq!(
        phases,
        vec![
            // Judged at one minute (passes, but the shadow is held for two).
            (60, Phase::Shadowing, None),
            (120, Phase::Progressing, Some(1)),
            (180, Phase::Progressing, Some(2)),
            (240, Phase::Progressing, Some(3)),
            (300, Phase::Progressing, Some(4)),
            (360, Phase::Promoted, None),
        ]
    );
    assert_eq!(
        run[1].1.state.message.as_deref(),
        Some("v2: shadow passed; step 1/4 at 1%")
    );
}

/// Each way a candidate can be worse, and the check that must catch it at the first analysis.
#[test]
fn a_worse_candidate_is_rolled_back_at_its_first_analysis_having_had_only_the_first_share() {
    struct Case {
        name: &'static str,
        config: RolloutConfig,
        candidate: Health,
        drift: Option<f64>,
        load_error: Option<&'static str>,
        check: Check,
        reason: &'static str,
    }
    let case = |name, config, candidate, check, reason| Case {
        name,
        config,
        candidate,
        drift: None,
        load_error: None,
        check,
        reason,
    };
    let cases = [
        case(
            "errors",
            config(),
            Health {
                errors: 20,
                ..good()
            },
            Check::ErrorRate,
            "ErrorRateTooHigh",
        ),
        case(
            "latency",
            config(),
            Health {
                p99_ms: 900.0,
                ..good()
            },
            Check::LatencyP99,
            "LatencyTooHigh",
        ),
        case(
            "low reward",
            config(),
            Health {
                reward_mean: 0.7,
                ..good()
            },
            Check::RewardRatio,
            "RewardTooLow",
        ),
        case(
            "low shadow agreement",
            with_shadow(),
            Health {
                agreement: Some(0.6),
                ..good()
            },
            Check::ShadowAgreement,
            "ShadowDisagrees",
        ),
        Case {
            drift: Some(0.4),
            ..case("drift", config(), good(), Check::Drift, "DriftTooHigh")
        },
        Case {
            drift: Some(0.4),
            ..case(
                "drift while shadowing",
                with_shadow(),
                good(),
                Check::Drift,
                "DriftTooHigh",
            )
        },
        Case {
            load_error: Some("version 2: model failed to load"),
            ..case(
                "serving cannot load it",
                config(),
                Health {
                    requests: 0,
                    ..good()
                },
                Check::PolicyLoaded,
                "PolicyNotLoaded",
            )
        },
    ];
    for c in cases {
        let shadowing = c.config.shadow.is_some();
        let mut sim = Sim::new(c.config);
        sim.candidate = c.candidate;
        sim.drift = c.drift;
        sim.load_error = c.load_error.map(String::from);
        sim.start_candidate(0);
        let decision = sim.tick(60);
        let s = &decision.state;
        assert_eq!(s.phase, Phase::RolledBack, "{}", c.name);
        assert_eq!(s.reason.as_deref(), Some(c.reason), "{}", c.name);
        assert_eq!(s.stable_version, Some(STABLE), "{}", c.name);
        assert_eq!(s.candidate_version, Some(CANDIDATE), "{}", c.name);
        assert_eq!(
            (s.current_step, s.current_weight),
            (None, 0.0),
            "{}",
            c.name
        );
        let analysis = s.last_analysis.as_ref().unwrap();
        assert_eq!(analysis.verdict, Verdict::Failed, "{}", c.name);
        assert_eq!(analysis.decided_by, Some(c.check), "{}", c.name);
        assert_eq!(
            analysis.stage,
            if shadowing {
                Stage::Shadow
            } else {
                Stage::Canary
            },
            "{}",
            c.name
        );
        // The compensation: stable alone, in one write.
        assert_eq!(
            policies(&decision),
            vec![&stable_only(STABLE)],
            "{}",
            c.name
        );
        assert!(
            decision.actions.iter().any(|a| matches!(
                a,
                Action::RecordEvent { event_type: EventType::Warning, reason, .. } if reason == c.reason
            )),
            "{}",
            c.name
        );
        assert!(
            decision.actions.iter().any(|a| matches!(
                a,
                Action::RegistryEvent(e) if e.reason == c.reason
                    && e.phase == Phase::RolledBack
                    && e.analysis.as_ref() == Some(analysis)
            )),
            "{}",
            c.name
        );
        // The candidate never answered more than the first step's share.
        let most = sim.weights.iter().copied().fold(0.0, f64::max);
        assert!(most <= 0.01, "{}: got weight {most}", c.name);
        assert_eq!(decision.requeue_after, None, "{}", c.name);
    }
}

#[test]
fn a_candidate_bad_in_reward_and_errors_is_rolled_back_for_its_reward() {
    let mut sim = Sim::new(config());
    sim.candidate = Health {
        errors: 50,
        reward_mean: 0.5,
        ..good()
    };
    sim.start_candidate(0);
    let decision = sim.tick(60);
    assert_eq!(decision.state.reason.as_deref(), Some("RewardTooLow"));
    let analysis = decision.state.last_analysis.unwrap();
    let error_rate = analysis
        .checks
        .iter()
        .find(|c| c.check == Check::ErrorRate)
        .unwrap();
    assert_eq!(error_rate.passed, Some(false));
    assert!(
        decision
            .state
            .message
            .unwrap()
            .starts_with("v2 rolled back at step 1/4 (1%): rewardRatio 0.5 < 0.95")
    );
}

#[test]
fn a_failure_inside_a_long_hold_rolls_back_without_waiting_for_its_end() {
    let mut cfg = config();
    cfg.steps[0].pause = minutes(10);
    let mut sim = Sim::new(cfg);
    sim.start_candidate(0);
    assert_eq!(sim.tick(60).state.current_step, Some(1));
    sim.candidate.errors = 100;
    let decision = sim.tick(120);
    assert_eq!(decision.state.phase, Phase::RolledBack);
}

#[test]
fn a_pass_inside_the_hold_does_not_advance_the_step() {
    let mut cfg = config();
    cfg.steps[0].pause = minutes(5);
    let mut sim = Sim::new(cfg);
    sim.start_candidate(0);
    let run = sim.run(60, 400);
    let seen: Vec<(i64, Option<u32>)> = run
        .iter()
        .map(|(t, d)| (*t, d.state.current_step))
        .take(5)
        .collect();
    assert_eq!(
        seen,
        vec![
            (60, Some(1)),
            (120, Some(1)),
            (180, Some(1)),
            (240, Some(1)),
            (300, Some(2))
        ]
    );
}

#[test]
fn too_few_requests_waits_instead_of_passing_and_then_proceeds() {
    let mut sim = Sim::new(config());
    sim.candidate = quiet();
    sim.start_candidate(0);
    let waiting = sim.tick(60);
    assert_eq!(waiting.state.phase, Phase::Progressing);
    assert_eq!(waiting.state.current_step, Some(1));
    assert_eq!(waiting.state.inconclusive_analyses, 1);
    assert_eq!(waiting.state.reason.as_deref(), Some("WaitingForTraffic"));
    assert_eq!(
        waiting.state.message.as_deref(),
        Some("step 1/4 (1%): inconclusive: 3 requests < 50 needed (analysis 1 of 3)")
    );
    assert_eq!(waiting.requeue_after, Some(minutes(1)));
    assert!(waiting.actions.is_empty());
    let analysis = waiting.state.last_analysis.as_ref().unwrap();
    assert_eq!(analysis.verdict, Verdict::Inconclusive);
    assert_eq!(analysis.decided_by, Some(Check::SampleSize));

    sim.candidate = good();
    let next = sim.tick(120);
    assert_eq!(next.state.current_step, Some(2));
    assert_eq!(next.state.inconclusive_analyses, 0);
}

#[test]
fn a_rollout_nobody_can_judge_fails_after_the_cap_and_compensates() {
    let mut sim = Sim::new(config());
    sim.candidate = quiet();
    sim.start_candidate(0);
    let run = sim.run(60, 3600);
    let phases: Vec<(i64, Phase, u32)> = run
        .iter()
        .map(|(t, d)| (*t, d.state.phase, d.state.inconclusive_analyses))
        .collect();
    assert_eq!(
        phases,
        vec![
            (60, Phase::Progressing, 1),
            (120, Phase::Progressing, 2),
            (180, Phase::Failed, 0)
        ]
    );
    let failed = &run[2].1;
    assert_eq!(failed.state.reason.as_deref(), Some(REASON_INCONCLUSIVE));
    assert_eq!(policies(failed), vec![&stable_only(STABLE)]);
    assert_eq!(event_reasons(failed), vec![REASON_INCONCLUSIVE]);
    // Not retried on its own.
    assert!(sim.tick(4000).actions.is_empty());
}

#[test]
fn with_no_cap_an_unjudgeable_rollout_waits_forever_at_its_step() {
    let mut cfg = config();
    cfg.max_inconclusive = 0;
    let mut sim = Sim::new(cfg);
    sim.candidate = quiet();
    sim.start_candidate(0);
    let run = sim.run(60, 60 * 100);
    let last = &run.last().unwrap().1;
    assert_eq!(last.state.phase, Phase::Progressing);
    assert_eq!(last.state.current_step, Some(1));
    assert_eq!(last.state.inconclusive_analyses, 100);
    assert!(sim.weights.iter().all(|w| *w <= 0.01));
}

#[test]
fn inconclusive_judgements_inside_the_hold_do_not_count_towards_the_cap() {
    let mut cfg = config();
    cfg.steps[0].pause = minutes(5);
    let mut sim = Sim::new(cfg);
    sim.candidate = quiet();
    sim.start_candidate(0);
    let run = sim.run(60, 300);
    let counts: Vec<u32> = run
        .iter()
        .map(|(_, d)| d.state.inconclusive_analyses)
        .collect();
    assert_eq!(counts, vec![0, 0, 0, 0, 1]);
}

#[test]
fn pause_freezes_the_step_and_resume_holds_it_again() {
    let mut sim = Sim::new(config());
    sim.start_candidate(0);
    sim.tick(60); // step 2
    sim.controls.paused = true;
    let paused = sim.tick(90);
    assert_eq!(paused.state.phase, Phase::Paused);
    assert_eq!(paused.state.paused_phase, Some(Phase::Progressing));
    assert_eq!(paused.state.current_step, Some(2));
    assert_eq!(event_reasons(&paused), vec!["Paused"]);
    assert!(policies(&paused).is_empty());
    assert_eq!(paused.requeue_after, None);
    // The split stays as it was.
    assert_eq!(desired_policy(&sim.config, &sim.state), Some(canary(0.1)));

    // While paused nothing is judged, not even a candidate gone bad, and nothing is repeated.
    sim.candidate.errors = 500;
    assert_eq!(analysis_window(&sim.config, &sim.state, at(600)), None);
    let still = sim.tick(600);
    assert!(still.actions.is_empty());
    assert_eq!(still.state, paused.state);

    sim.candidate = good();
    sim.controls.paused = false;
    let resumed = sim.tick(700);
    assert_eq!(resumed.state.phase, Phase::Progressing);
    assert_eq!(resumed.state.paused_phase, None);
    assert_eq!(resumed.state.current_step, Some(2));
    assert_eq!(resumed.state.step_started_at, Some(at(700)));
    assert_eq!(event_reasons(&resumed), vec!["Resumed"]);
    assert_eq!(resumed.requeue_after, Some(minutes(1)));
    assert_eq!(sim.tick(760).state.current_step, Some(3));
}

#[test]
fn a_pause_while_stable_holds_a_new_version_back_until_resumed() {
    let mut sim = Sim::new(config());
    sim.controls.paused = true;
    let held = sim.start_candidate(0);
    assert_eq!(held.state.phase, Phase::Paused);
    assert_eq!(held.state.paused_phase, Some(Phase::Promoted));
    assert_eq!(
        held.state.message.as_deref(),
        Some("paused: v2 waits to roll out")
    );
    assert!(policies(&held).is_empty());
    sim.controls.paused = false;
    let started = sim.tick(30);
    assert_eq!(started.state.phase, Phase::Progressing);
    assert_eq!(policies(&started), vec![&canary(0.01)]);
    assert_eq!(event_reasons(&started), vec!["Resumed", "RolloutStarted"]);
}

#[test]
fn abort_rolls_back_at_once_and_blocks_rollouts_until_cleared() {
    let mut sim = Sim::new(config());
    sim.start_candidate(0);
    sim.tick(60); // step 2
    sim.controls.abort = true;
    let aborted = sim.tick(90);
    assert_eq!(aborted.state.phase, Phase::RolledBack);
    assert_eq!(aborted.state.reason.as_deref(), Some(REASON_ABORTED));
    assert_eq!(policies(&aborted), vec![&stable_only(STABLE)]);
    assert_eq!(event_reasons(&aborted), vec![REASON_ABORTED]);
    assert_eq!(
        aborted.state.message.as_deref(),
        Some("aborted: v2 rolled back at step 2/4 (10%); v1 keeps all traffic")
    );

    // Still set: nothing starts, not even a newer version.
    assert!(sim.tick(200).actions.is_empty());
    sim.target = Target::Version(3);
    let blocked = sim.tick(300);
    assert!(blocked.actions.is_empty());
    assert_eq!(blocked.state.phase, Phase::RolledBack);
    assert_eq!(
        blocked.state.message.as_deref(),
        Some("v3 waits: spec.abort (or the ferry.dev/abort annotation) is set")
    );

    // Cleared with the same version as target: it is rolled out again from the first step.
    sim.target = Target::Version(CANDIDATE);
    sim.controls.abort = false;
    let retried = sim.tick(400);
    assert_eq!(retried.state.phase, Phase::Progressing);
    assert_eq!(retried.state.current_step, Some(1));
    assert_eq!(retried.state.rollout_started_at, Some(at(400)));
    assert_eq!(policies(&retried), vec![&canary(0.01)]);
}

#[test]
fn abort_wins_over_promote_now_and_pause() {
    let mut sim = Sim::new(config());
    sim.start_candidate(0);
    sim.controls = Controls {
        paused: true,
        abort: true,
        promote_now: true,
    };
    let decision = sim.tick(30);
    assert_eq!(decision.state.phase, Phase::RolledBack);
    assert_eq!(decision.state.stable_version, Some(STABLE));
}

#[test]
fn promote_now_promotes_the_candidate_mid_rollout() {
    let mut sim = Sim::new(config());
    sim.start_candidate(0);
    sim.controls.promote_now = true;
    let promoted = sim.tick(30);
    assert_eq!(promoted.state.phase, Phase::Promoted);
    assert_eq!(promoted.state.stable_version, Some(CANDIDATE));
    assert_eq!(promoted.state.candidate_version, None);
    assert_eq!(promoted.state.reason.as_deref(), Some("PromotedManually"));
    assert_eq!(policies(&promoted), vec![&stable_only(CANDIDATE)]);
    assert_eq!(promoted.requeue_after, None);
    // While it stays set, the next version goes straight to stable.
    sim.target = Target::Version(3);
    let next = sim.tick(60);
    assert_eq!(next.state.stable_version, Some(3));
    assert_eq!(policies(&next), vec![&stable_only(3)]);
}

#[test]
fn promote_now_overrides_a_rollback_that_is_otherwise_final() {
    let mut sim = Sim::new(config());
    sim.candidate.errors = 100;
    sim.start_candidate(0);
    assert_eq!(sim.tick(60).state.phase, Phase::RolledBack);
    // The rolled-back version stays the target, but is not retried on its own.
    let idle = sim.tick(600);
    assert!(idle.actions.is_empty());
    assert_eq!(idle.state.phase, Phase::RolledBack);
    sim.controls.promote_now = true;
    let forced = sim.tick(700);
    assert_eq!(forced.state.phase, Phase::Promoted);
    assert_eq!(forced.state.stable_version, Some(CANDIDATE));
}

#[test]
fn promote_now_on_a_paused_rollout_promotes_it() {
    let mut sim = Sim::new(config());
    sim.start_candidate(0);
    sim.controls.paused = true;
    sim.tick(30);
    sim.controls.promote_now = true;
    let promoted = sim.tick(40);
    assert_eq!(promoted.state.phase, Phase::Promoted);
    assert_eq!(promoted.state.stable_version, Some(CANDIDATE));
    assert_eq!(promoted.state.paused_phase, None);
}

#[test]
fn a_restarted_operator_makes_the_same_decision_from_the_same_status() {
    let mut sim = Sim::new(config());
    sim.start_candidate(0);
    sim.tick(60); // step 2, started at 60
    // The status as the API server stores it, read back by a new operator process.
    let status = serde_json::to_string(&sim.state).unwrap();
    let restored: RolloutState = serde_json::from_str(&status).unwrap();
    assert_eq!(restored, sim.state);

    for t in [61, 100, 119, 120, 150] {
        let mut first = Sim::new(config());
        first.target = Target::Version(CANDIDATE);
        first.state = sim.state.clone();
        let mut second = Sim::new(config());
        second.target = Target::Version(CANDIDATE);
        second.state = restored.clone();
        assert_eq!(first.tick(t), second.tick(t), "at {t}");
    }
}

#[test]
fn a_decision_replayed_on_its_own_output_never_steps_twice() {
    let mut sim = Sim::new(config());
    sim.start_candidate(0);
    let advanced = sim.tick(60);
    assert_eq!(advanced.state.current_step, Some(2));
    // The write of the status woke the operator again at once, with the analysis still at hand.
    let analysis = sim.analysis(minutes(1));
    for t in [60, 61, 90] {
        let again = advance(
            &sim.config,
            &advanced.state,
            &Inputs {
                now: at(t),
                target: Target::Version(CANDIDATE),
                controls: Controls::default(),
                observation: Some(Observation {
                    analysis: &analysis,
                    candidate_drift: None,
                }),
            },
        );
        assert_eq!(again.state, advanced.state, "at {t}");
        assert!(again.actions.is_empty(), "at {t}");
        assert_eq!(
            again.requeue_after,
            Some(Duration::from_secs((120 - t) as u64)),
            "at {t}"
        );
    }
}

#[test]
fn a_lost_status_write_repeats_the_step_change_once_not_twice() {
    let mut sim = Sim::new(config());
    sim.start_candidate(0);
    let before = sim.state.clone();
    let first = sim.tick(60);
    // The status write failed: the operator restarts from `before` a little later.
    sim.state = before;
    let retry = sim.tick(75);
    assert_eq!(retry.state.current_step, first.state.current_step);
    assert_eq!(policies(&retry), policies(&first));
    assert_eq!(sim.tick(80).state.current_step, Some(2));
}

#[test]
fn a_new_candidate_mid_rollout_restarts_the_rollout_with_it_in_one_policy_write() {
    let mut sim = Sim::new(config());
    sim.start_candidate(0);
    sim.tick(60);
    sim.tick(120); // step 3 at 50%
    sim.target = Target::Version(3);
    let restarted = sim.tick(150);
    let s = &restarted.state;
    assert_eq!(
        (
            s.phase,
            s.candidate_version,
            s.current_step,
            s.current_weight
        ),
        (Phase::Progressing, Some(3), Some(1), 1.0)
    );
    assert_eq!(s.stable_version, Some(STABLE));
    assert_eq!(s.rollout_started_at, Some(at(150)));
    let expected = EndpointPolicy {
        canary: Some(CanaryPolicy {
            version: 3,
            weight: 0.01,
        }),
        ..stable_only(STABLE)
    };
    assert_eq!(policies(&restarted), vec![&expected]);
    assert_eq!(
        event_reasons(&restarted),
        vec!["Superseded", "RolloutStarted"]
    );
    // The new candidate is judged on its own numbers from its own first step.
    assert_eq!(analysis_window(&sim.config, &sim.state, at(200)), None);
    assert_eq!(
        analysis_window(&sim.config, &sim.state, at(210)),
        Some(minutes(1))
    );
}

#[test]
fn the_target_going_back_to_the_stable_version_withdraws_the_candidate() {
    let mut sim = Sim::new(config());
    sim.start_candidate(0);
    sim.tick(60);
    sim.target = Target::Version(STABLE);
    let withdrawn = sim.tick(90);
    assert_eq!(withdrawn.state.phase, Phase::RolledBack);
    assert_eq!(withdrawn.state.reason.as_deref(), Some(REASON_WITHDRAWN));
    assert_eq!(withdrawn.state.candidate_version, None);
    assert_eq!(policies(&withdrawn), vec![&stable_only(STABLE)]);
    // A withdrawn version was not judged bad: asking for it again rolls it out.
    sim.target = Target::Version(CANDIDATE);
    assert_eq!(sim.tick(200).state.phase, Phase::Progressing);
}

#[test]
fn the_first_version_is_deployed_without_a_rollout() {
    let mut sim = Sim::new(config());
    sim.state = RolloutState::default();
    sim.target = Target::Version(5);
    let deployed = sim.tick(0);
    assert_eq!(deployed.state.phase, Phase::Promoted);
    assert_eq!(deployed.state.stable_version, Some(5));
    assert_eq!(deployed.state.reason.as_deref(), Some("Deployed"));
    assert_eq!(policies(&deployed), vec![&stable_only(5)]);
    assert_eq!(event_reasons(&deployed), vec!["Deployed"]);
    assert_eq!(deployed.requeue_after, None);
}

#[test]
fn an_unresolved_target_stays_pending_and_retries() {
    let mut sim = Sim::new(config());
    sim.state = RolloutState::default();
    sim.target = Target::Unresolved("alias production of iris does not exist".into());
    let pending = sim.tick(0);
    assert_eq!(pending.state.phase, Phase::Pending);
    assert_eq!(
        pending.state.message.as_deref(),
        Some("alias production of iris does not exist")
    );
    assert!(pending.actions.is_empty());
    assert_eq!(pending.requeue_after, Some(RETRY_AFTER));
}

#[test]
fn an_unresolved_target_does_not_disturb_what_runs() {
    let mut sim = Sim::new(config());
    sim.start_candidate(0);
    sim.target = Target::Unresolved("registry unreachable".into());
    let d = sim.tick(60);
    assert_eq!(d.state.current_step, Some(2));
    let mut steady = Sim::new(config());
    steady.target = Target::Unresolved("registry unreachable".into());
    let d = steady.tick(0);
    assert!(d.actions.is_empty());
    assert_eq!(d.state, Sim::new(config()).state);
}

#[test]
fn a_missing_analysis_when_one_is_due_judges_nothing_and_retries_soon() {
    let mut sim = Sim::new(config());
    sim.start_candidate(0);
    let before = sim.state.clone();
    let d = advance(
        &sim.config,
        &sim.state,
        &Inputs {
            now: at(60),
            target: Target::Version(CANDIDATE),
            controls: Controls::default(),
            observation: None,
        },
    );
    assert_eq!(d.state, before);
    assert!(d.actions.is_empty());
    assert_eq!(d.requeue_after, Some(RETRY_AFTER));
}

#[test]
fn the_analysis_window_is_due_at_judgement_times_and_covers_only_the_current_step() {
    let mut cfg = config();
    cfg.steps[0].pause = Duration::from_secs(30);
    let mut sim = Sim::new(cfg);
    sim.start_candidate(0);
    let window = |sim: &Sim, t| analysis_window(&sim.config, &sim.state, at(t));
    assert_eq!(window(&sim, 29), None);
    // The hold ends before the interval: the window is the 30 s the step has run.
    assert_eq!(window(&sim, 30), Some(Duration::from_secs(30)));
    sim.tick(30); // step 2 from 30
    assert_eq!(window(&sim, 60), None);
    assert_eq!(window(&sim, 90), Some(minutes(1)));
    // Nothing to judge when nothing rolls out.
    assert_eq!(
        analysis_window(&config(), &Sim::new(config()).state, at(90)),
        None
    );
}

#[test]
fn the_desired_policy_follows_the_phase() {
    let cfg = with_shadow();
    let mut state = RolloutState {
        phase: Phase::Shadowing,
        stable_version: Some(STABLE),
        candidate_version: Some(CANDIDATE),
        ..RolloutState::default()
    };
    assert_eq!(
        desired_policy(&cfg, &state).unwrap().shadows,
        vec![ShadowPolicy {
            version: CANDIDATE,
            sample_rate: 0.5
        }]
    );
    state.phase = Phase::Paused;
    state.paused_phase = Some(Phase::Shadowing);
    assert_eq!(desired_policy(&cfg, &state).unwrap().shadows.len(), 1);
    state.phase = Phase::RolledBack;
    state.paused_phase = None;
    assert_eq!(desired_policy(&cfg, &state), Some(stable_only(STABLE)));
    state.stable_version = None;
    assert_eq!(desired_policy(&cfg, &state), None);
}

#[test]
fn the_desired_policy_carries_the_max_age_in_whole_seconds_in_every_phase() {
    let cfg = RolloutConfig {
        max_age: Some(Duration::from_secs(30 * 86_400)),
        ..config()
    };
    let mut state = RolloutState {
        phase: Phase::Progressing,
        stable_version: Some(STABLE),
        candidate_version: Some(CANDIDATE),
        current_step: Some(1),
        current_weight: 1.0,
        ..RolloutState::default()
    };
    let rolling = desired_policy(&cfg, &state).unwrap();
    assert_eq!(rolling.max_age_seconds, Some(2_592_000));
    assert!(rolling.canary.is_some());
    state.phase = Phase::Promoted;
    state.stable_version = Some(CANDIDATE);
    state.candidate_version = None;
    assert_eq!(
        desired_policy(&cfg, &state).unwrap(),
        EndpointPolicy {
            max_age_seconds: Some(2_592_000),
            ..stable_only(CANDIDATE)
        }
    );
    assert_eq!(
        desired_policy(&config(), &state).unwrap().max_age_seconds,
        None
    );
}

#[test]
fn percent_weights_snap_to_the_registry_grid() {
    assert_eq!(fraction(1.0), 0.01);
    assert_eq!(fraction(0.15), 0.002);
    assert_eq!(fraction(33.3333), 0.333);
    assert_eq!(fraction(100.0), 1.0);
    assert_eq!(fraction(250.0), 1.0);
}

#[test]
fn every_event_goes_to_kubernetes_and_to_the_registry_alike() {
    let mut sim = Sim::new(config());
    let mut all = vec![sim.start_candidate(0)];
    all.extend(sim.run(60, 600).into_iter().map(|(_, d)| d));
    for decision in &all {
        let kube: Vec<(&str, &str)> = decision
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::RecordEvent {
                    reason, message, ..
                } => Some((reason.as_str(), message.as_str())),
                _ => None,
            })
            .collect();
        let registry: Vec<(&str, &str)> = decision
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::RegistryEvent(e) => Some((e.reason.as_str(), e.message.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(kube, registry);
    }
    let reasons: Vec<&str> = all.iter().flat_map(event_reasons).collect();
    assert_eq!(
        reasons,
        vec![
            "RolloutStarted",
            "StepAdvanced",
            "StepAdvanced",
            "StepAdvanced",
            "Promoted"
        ]
    );
}
