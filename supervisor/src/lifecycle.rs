//! An instance's life as plain data: its state, the events that move it, and what each
//! transition asks the supervisor to do next. No Docker and no clock here: the table tests
//! at the bottom are the rules, and the supervision task only carries out what they ask.
//!
//! ```text
//!  Creating --created/adopted--> Starting --ready--> Running <--ready/unready--+
//!                                   |  ^                |  \-----------------+
//!              exit, never proven   |  | restarted      | exit (proven)
//!     Exited <----------------------+  +-- Restarting <-+
//!  any state but Stopping --drain--> Stopping
//! ```

use std::time::Duration;

use serde::Serialize;

use crate::backoff::{Backoff, BackoffSettings};

/// Where an instance is in its life (CONTRACT.md's `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Its container is being made.
    Creating,
    /// Its container runs but has not passed readiness since it (re)started.
    Starting,
    /// It has passed readiness since it (re)started; `ready` says whether it still does.
    Running,
    /// Waiting out the backoff before its container starts again.
    Restarting,
    /// Drained and being stopped.
    Stopping,
    /// Its container exited before it was ever ready, or was removed under it.
    Exited,
}

impl InstanceState {
    /// Only a running instance may take requests, and only while its readiness passes.
    pub fn can_serve(self) -> bool {
        self == InstanceState::Running
    }

    /// An exit in this state can be answered by starting the same container again.
    pub fn can_restart(self) -> bool {
        matches!(self, InstanceState::Starting | InstanceState::Running)
    }

    /// Whether a drain has anything left to do.
    pub fn can_drain(self) -> bool {
        self != InstanceState::Stopping
    }
}

/// What happened to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Its new container was made and started.
    Created,
    /// An earlier daemon's container, found running. `proven`: it is known to have served
    /// (its spec succeeded before), so an exit restarts it rather than failing the apply.
    Adopted { proven: bool },
    /// A readiness probe ended; `ready` is the threshold's verdict after it, `detail` says
    /// why the probe failed (if it did).
    Readiness { ready: bool, detail: Option<String> },
    /// The liveness threshold was crossed.
    LivenessFailed { why: String },
    /// The container stopped (`code: None`: it was removed). `ran_for`: since it started.
    Exited { code: Option<i64>, why: String, ran_for: Duration },
    /// The backoff is over and the container runs again.
    Restarted,
    /// Starting it again failed; the backoff applies once more.
    RestartFailed { why: String },
    /// It leaves routing to be stopped.
    Drain,
}

/// What a transition asks of the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Nothing beyond the new state.
    Nothing,
    /// Stop the container (SIGTERM, then SIGKILL); its exit comes as an event.
    Stop,
    /// Start the same container again after this delay.
    RestartAfter(Duration),
    /// It never became ready: the create or update waiting on it fails.
    FailApply,
}

/// An instance's state and what it has been through, as `show` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Life {
    pub state: InstanceState,
    pub ready: bool,
    pub restarts: u32,
    pub last_exit_code: Option<i64>,
    pub reason: Option<String>,
    /// Passed readiness at least once in its life (or adopted as such).
    #[serde(skip)]
    pub proven: bool,
    #[serde(skip)]
    backoff: Backoff,
}

impl Life {
    pub fn new(backoff: BackoffSettings) -> Life {
        Life {
            state: InstanceState::Creating,
            ready: false,
            restarts: 0,
            last_exit_code: None,
            reason: None,
            proven: false,
            backoff: Backoff::new(backoff),
        }
    }

    /// Applies `event`; `None` when it means nothing in the current state (a late probe
    /// result of a drained instance, say), which leaves the life unchanged.
    pub fn on(&mut self, event: Event) -> Option<Ask> {
        use InstanceState::*;
        let ask = match (self.state, event) {
            (Stopping, _) => return None,
            (_, Event::Drain) => {
                self.state = Stopping;
                self.ready = false;
                self.reason = Some("draining".into());
                Ask::Stop
            }
            (Creating, Event::Created) => {
                self.state = Starting;
                self.reason = Some("waiting for the readiness probe".into());
                Ask::Nothing
            }
            (Creating, Event::Adopted { proven }) => {
                self.state = Starting;
                self.proven = proven;
                self.reason = Some("adopted; waiting for the readiness probe".into());
                Ask::Nothing
            }
            (Starting | Running, Event::Readiness { ready: true, detail }) => {
                self.state = Running;
                self.ready = true;
                self.proven = true;
                // A failed probe short of the threshold is worth a word, not a verdict.
                self.reason = detail;
                Ask::Nothing
            }
            (Starting | Running, Event::Readiness { ready: false, detail }) => {
                self.ready = false;
                self.reason = Some(detail.unwrap_or_else(|| "readiness probe failing".into()));
                Ask::Nothing
            }
            (Starting | Running, Event::LivenessFailed { why }) => {
                self.ready = false;
                self.reason = Some(why);
                Ask::Stop
            }
            (state, Event::Exited { code, why, ran_for }) if state.can_restart() || state == Creating => {
                self.ready = false;
                self.last_exit_code = code;
                // A removed container cannot be started again; nor is one that never served.
                if self.proven && code.is_some() && state != Creating {
                    let delay = self.backoff.next_delay(ran_for);
                    self.state = Restarting;
                    self.restarts += 1;
                    self.reason = Some(format!("{why}; restarting in {} ms", delay.as_millis()));
                    Ask::RestartAfter(delay)
                } else {
                    self.state = Exited;
                    self.reason = Some(why);
                    Ask::FailApply
                }
            }
            (Restarting, Event::Restarted) => {
                self.state = Starting;
                self.reason = Some("restarted; waiting for the readiness probe".into());
                Ask::Nothing
            }
            (Restarting, Event::RestartFailed { why }) => {
                let delay = self.backoff.next_delay(Duration::ZERO);
                self.reason =
                    Some(format!("restart failed: {why}; trying again in {} ms", delay.as_millis()));
                Ask::RestartAfter(delay)
            }
            _ => return None,
        };
        Some(ask)
    }
}

#[cfg(test)]
mod tests {
    use super::InstanceState::*;
    use super::*;

    fn settings() -> BackoffSettings {
        BackoffSettings {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
            reset_after: Duration::from_secs(60),
        }
    }

    /// A life in `state`, `proven` or not, as the events of a real run would leave it.
    fn life(state: InstanceState, proven: bool) -> Life {
        let mut l = Life::new(settings());
        let path: &[Event] = match state {
            Creating => &[],
            Starting => &[Event::Adopted { proven }],
            Running => &[Event::Created, ready(true)],
            Restarting => &[Event::Created, ready(true), exit(1)],
            Stopping => &[Event::Drain],
            Exited => &[Event::Created, exit(1)],
        };
        for e in path {
            l.on(e.clone()).expect("a valid path");
        }
        l.proven = proven;
        l
    }

    fn ready(ready: bool) -> Event {
        Event::Readiness { ready, detail: (!ready).then(|| "GET /ready: status 503".into()) }
    }

    fn exit(code: i64) -> Event {
        Event::Exited { code: Some(code), why: format!("exited with code {code}"), ran_for: Duration::ZERO }
    }

    fn removed() -> Event {
        Event::Exited { code: None, why: "the container was removed".into(), ran_for: Duration::ZERO }
    }

    #[test]
    fn only_a_running_state_serves_and_stopping_cannot_be_drained_again() {
        let all = [Creating, Starting, Running, Restarting, Stopping, Exited];
        let serving: Vec<_> = all.iter().map(|s| s.can_serve()).collect();
        assert_eq!(serving, [false, false, true, false, false, false]);
        let restartable: Vec<_> = all.iter().map(|s| s.can_restart()).collect();
        assert_eq!(restartable, [false, true, true, false, false, false]);
        let drainable: Vec<_> = all.iter().map(|s| s.can_drain()).collect();
        assert_eq!(drainable, [true, true, true, true, false, true]);
    }

    /// (state, proven, event) and what it leads to: the new state and the ask, or None (ignored).
    type Row = (InstanceState, bool, Event, Option<(InstanceState, Ask)>);

    /// Every state with every event: the state it leads to and what it asks (None: ignored).
    #[test]
    fn each_state_answers_each_event_by_the_rules() {
        let d1 = Duration::from_secs(1);
        let liveness = Event::LivenessFailed { why: "liveness probe failed 3 times".into() };
        let restart_failed = Event::RestartFailed { why: "no such image".into() };
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            // A new container starts out waiting for readiness.
            (Creating, false, Event::Created, Some((Starting, Ask::Nothing))),
            (Creating, false, Event::Adopted { proven: true }, Some((Starting, Ask::Nothing))),
            (Creating, false, ready(true), None),
            (Creating, false, liveness.clone(), None),
            // A container removed before it was made fails the apply.
            (Creating, false, exit(1), Some((Exited, Ask::FailApply))),
            (Creating, false, Event::Restarted, None),
            (Creating, false, Event::Drain, Some((Stopping, Ask::Stop))),
            // Starting: readiness makes it run; an exit fails the apply unless it served once.
            (Starting, false, Event::Created, None),
            (Starting, false, ready(true), Some((Running, Ask::Nothing))),
            (Starting, false, ready(false), Some((Starting, Ask::Nothing))),
            (Starting, false, liveness.clone(), Some((Starting, Ask::Stop))),
            (Starting, false, exit(1), Some((Exited, Ask::FailApply))),
            (Starting, true, exit(1), Some((Restarting, Ask::RestartAfter(d1)))),
            (Starting, true, removed(), Some((Exited, Ask::FailApply))),
            (Starting, false, Event::Restarted, None),
            (Starting, false, Event::Drain, Some((Stopping, Ask::Stop))),
            // Running: readiness flips `ready` only; an exit restarts it after the backoff.
            (Running, true, ready(false), Some((Running, Ask::Nothing))),
            (Running, true, ready(true), Some((Running, Ask::Nothing))),
            (Running, true, liveness.clone(), Some((Running, Ask::Stop))),
            (Running, true, exit(137), Some((Restarting, Ask::RestartAfter(d1)))),
            (Running, true, removed(), Some((Exited, Ask::FailApply))),
            (Running, true, Event::Adopted { proven: true }, None),
            (Running, true, Event::Drain, Some((Stopping, Ask::Stop))),
            // Restarting: only the restart (or its failure) moves it on.
            (Restarting, true, Event::Restarted, Some((Starting, Ask::Nothing))),
            (Restarting, true, restart_failed.clone(), Some((Restarting, Ask::RestartAfter(d1 * 2)))),
            (Restarting, true, ready(true), None),
            (Restarting, true, exit(1), None),
            (Restarting, true, Event::Drain, Some((Stopping, Ask::Stop))),
            // Stopping is the end: nothing moves it.
            (Stopping, true, ready(true), None),
            (Stopping, true, exit(0), None),
            (Stopping, true, Event::Drain, None),
            (Stopping, true, Event::Restarted, None),
            // Exited waits for the apply to give up on it; a drain removes it.
            (Exited, false, ready(true), None),
            (Exited, false, exit(1), None),
            (Exited, false, Event::Restarted, None),
            (Exited, false, restart_failed, None),
            (Exited, false, Event::Drain, Some((Stopping, Ask::Stop))),
        ];
        for (state, proven, event, expected) in table {
            let mut l = life(state, proven);
            let before = l.clone();
            let ask = l.on(event.clone());
            let got = ask.map(|a| (l.state, a));
            assert_eq!(got, expected, "{state:?} (proven: {proven}) on {event:?}");
            if ask.is_none() {
                assert_eq!(l, before, "an ignored event changes nothing");
            }
        }
    }

    #[test]
    fn readiness_proves_an_instance_and_clears_its_reason() {
        let mut l = life(Starting, false);
        l.on(ready(false));
        assert_eq!(l.reason.as_deref(), Some("GET /ready: status 503"));
        l.on(ready(true));
        assert!(l.ready && l.proven && l.reason.is_none());
        l.on(ready(false));
        assert!(!l.ready && l.state == Running, "a ready instance that fails readiness keeps running");
    }

    #[test]
    fn restarts_count_and_back_off_until_a_long_run_resets_the_delay() {
        let mut l = life(Running, true);
        let mut delays = Vec::new();
        for _ in 0..5 {
            let Some(Ask::RestartAfter(d)) = l.on(exit(3)) else { panic!("restarts") };
            delays.push(d.as_secs());
            l.on(Event::Restarted);
        }
        assert_eq!(delays, [1, 2, 4, 8, 8]);
        assert_eq!((l.restarts, l.last_exit_code), (5, Some(3)));
        let long = Event::Exited { code: Some(3), why: "x".into(), ran_for: Duration::from_secs(60) };
        assert_eq!(l.on(long), Some(Ask::RestartAfter(Duration::from_secs(1))));
        assert!(l.reason.as_deref().is_some_and(|r| r.ends_with("restarting in 1000 ms")));
    }

    #[test]
    fn an_adopted_instance_counts_as_proven_only_when_its_spec_succeeded() {
        for (proven, expected) in [(true, Restarting), (false, Exited)] {
            let mut l = Life::new(settings());
            l.on(Event::Adopted { proven });
            l.on(exit(1));
            assert_eq!(l.state, expected, "proven: {proven}");
        }
    }

    #[test]
    fn the_reported_life_has_no_internal_fields() {
        let json = serde_json::to_value(life(Running, true)).expect("json");
        assert_eq!(json["state"], "running");
        assert!(json.get("proven").is_none() && json.get("backoff").is_none());
    }
}
