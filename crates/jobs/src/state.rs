//! The job state machine. Every change of a job's status goes through [`transition`], which asks
//! the pure [`State::apply`] first: a transition it refuses leaves the job as it was.
//!
//! ```text
//!   Queued ──Start──> Running ──Succeed──> Completed | CompletedWithWarnings
//!     │  │              │  └──Fail──> Failed        (Interrupt: Failed)
//!     │  └Fail> Failed  └──Stopped──> Cancelled
//!     └RequestCancel─> Cancelling(queued) ──Start/Fail/Interrupt──> Cancelled
//!   Running ──RequestCancel──> Cancelling(running) ──Stopped/Fail/Interrupt──> Cancelled
//!                                                  └─Succeed──> Completed (the cancel came too late)
//! ```
//!
//! The wire shows Azure's statuses: queued and running jobs are both `InProgress` (a queued job
//! says why it waits in its property bag), both cancelling states are `Cancelling`.

use rsvault_types::job::{Job, JobStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Queued,
    Running,
    /// Cancel requested; `started` says whether engine work may be running.
    Cancelling {
        started: bool,
    },
    Completed,
    CompletedWithWarnings,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A runner picked the job up.
    Start,
    /// A client asked for a cancel.
    RequestCancel,
    /// The work ended; `warnings` makes it `CompletedWithWarnings`.
    Succeed { warnings: bool },
    /// The work stopped at a cancel.
    Stopped,
    /// The work failed. With a cancel in flight the job ends `Cancelled`: it stopped as asked.
    Fail,
    /// The process running the job stopped before it finished.
    Interrupt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a job in state {from:?} cannot take event {event:?}")]
pub struct IllegalTransition {
    pub from: State,
    pub event: Event,
}

impl State {
    /// The state a stored job is in.
    pub fn of(job: &Job) -> State {
        match job.status {
            JobStatus::InProgress if job.started => State::Running,
            JobStatus::InProgress => State::Queued,
            JobStatus::Cancelling => State::Cancelling {
                started: job.started,
            },
            JobStatus::Completed => State::Completed,
            JobStatus::CompletedWithWarnings => State::CompletedWithWarnings,
            JobStatus::Failed => State::Failed,
            JobStatus::Cancelled => State::Cancelled,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::Completed | State::CompletedWithWarnings | State::Failed | State::Cancelled
        )
    }

    /// Pure: no IO, no clock.
    pub fn apply(self, event: Event) -> Result<State, IllegalTransition> {
        use Event as E;
        use State as S;
        let next = match (self, event) {
            (S::Queued, E::Start) => S::Running,
            (S::Queued, E::RequestCancel) => S::Cancelling { started: false },
            (S::Queued, E::Fail) => S::Failed,
            // A queued job that was never picked up is still queued after a restart.
            (S::Queued, E::Interrupt) => S::Queued,
            (S::Running, E::RequestCancel) => S::Cancelling { started: true },
            (S::Running, E::Succeed { warnings: false }) => S::Completed,
            (S::Running, E::Succeed { warnings: true }) => S::CompletedWithWarnings,
            (S::Running, E::Stopped) => S::Cancelled,
            (S::Running, E::Fail | E::Interrupt) => S::Failed,
            (S::Cancelling { .. }, E::RequestCancel) => self,
            (S::Cancelling { started: false }, E::Start) => S::Cancelled,
            (S::Cancelling { started: true }, E::Succeed { warnings: false }) => S::Completed,
            (S::Cancelling { started: true }, E::Succeed { warnings: true }) => {
                S::CompletedWithWarnings
            }
            (S::Cancelling { started: true }, E::Stopped) => S::Cancelled,
            (S::Cancelling { .. }, E::Fail | E::Interrupt) => S::Cancelled,
            (from, event) => return Err(IllegalTransition { from, event }),
        };
        Ok(next)
    }
}

/// Applies `event` to `job`: the one way a job's status changes. On an illegal transition the job
/// is left as it was.
pub fn transition(job: &mut Job, event: Event) -> Result<State, IllegalTransition> {
    let next = State::of(job).apply(event)?;
    match next {
        State::Queued => {}
        State::Running => job.started = true,
        State::Cancelling { .. } => job.status = JobStatus::Cancelling,
        State::Completed => job.finish(JobStatus::Completed),
        State::CompletedWithWarnings => job.finish(JobStatus::CompletedWithWarnings),
        State::Failed => job.finish(JobStatus::Failed),
        State::Cancelled => job.finish(JobStatus::Cancelled),
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Start),
            Just(Event::RequestCancel),
            Just(Event::Succeed { warnings: false }),
            Just(Event::Succeed { warnings: true }),
            Just(Event::Stopped),
            Just(Event::Fail),
            Just(Event::Interrupt),
        ]
    }

    proptest! {
        #[test]
        fn random_event_sequences_keep_the_invariants(events in proptest::collection::vec(event(), 0..24)) {
            let mut state = State::Queued;
            let mut terminal_transitions = 0;
            let mut cancel_requested = false;
            let mut started = false;
            for e in events {
                match state.apply(e) {
                    Ok(next) => {
                        // Nothing leaves a terminal state.
                        prop_assert!(!state.is_terminal(), "{state:?} -> {next:?} on {e:?}");
                        if next.is_terminal() {
                            terminal_transitions += 1;
                        }
                        if e == Event::RequestCancel {
                            cancel_requested = true;
                        }
                        // A cancel is never lost: once requested, the job never runs or waits
                        // as if it had not been, and it does not end Failed.
                        if cancel_requested {
                            prop_assert!(!matches!(next, State::Queued | State::Running | State::Failed),
                                "cancel lost: {state:?} -> {next:?} on {e:?}");
                        }
                        // A started job never goes back to the queue.
                        if started {
                            prop_assert!(next != State::Queued);
                        }
                        started |= matches!(next, State::Running | State::Cancelling { started: true });
                        state = next;
                    }
                    Err(err) => prop_assert_eq!(err.from, state),
                }
            }
            // One terminal transition per attempt, at most.
            prop_assert!(terminal_transitions <= 1);
        }
    }

    #[test]
    fn a_cancel_that_arrives_while_queued_ends_the_job_at_pick_up() {
        let s = State::Queued.apply(Event::RequestCancel).unwrap();
        assert_eq!(s.apply(Event::Start).unwrap(), State::Cancelled);
    }

    #[test]
    fn finished_jobs_cannot_be_cancelled() {
        for s in [
            State::Completed,
            State::CompletedWithWarnings,
            State::Failed,
            State::Cancelled,
        ] {
            assert!(s.apply(Event::RequestCancel).is_err());
        }
    }
}
