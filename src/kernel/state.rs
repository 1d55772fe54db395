//! The kernel lifecycle as one explicit state machine: every allowed transition is in
//! [`KernelState::apply`], so what may happen in which state is read in one place.
//!
//! ```text
//! PREPARING → (PULLING) → CREATING → HELD? → RUNNING ⇄ SUSPENDED → TERMINATING → DONE | FAILED | CANCELLED
//!                                               RUNNING ⇄ RESTARTING
//!                          (ended, with results) → UPLOADING → DONE | FAILED
//! ```
//! Any live state may fail (FAILED) or be cancelled before it runs (CANCELLED); a container
//! exiting by itself goes straight to DONE (exit 0) or FAILED, unless its restart policy
//! starts it again (RESTARTING, back to RUNNING when it runs; DRMAA2 reads it QUEUED). A
//! profile kernel with results goes through UPLOADING first, holding its slots; a failed
//! upload ends it FAILED. After an agent restart, a creation that was cut short (PREPARING,
//! PULLING, CREATING, or HELD without its instance) starts over at PREPARING (`Relaunch`).
//! [`KernelState::qarnot`] gives Qarnot's task state beside DRMAA2's.

use std::fmt;

/// Where a kernel is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum KernelState {
    Preparing,
    Pulling,
    Creating,
    /// Created, not started until released (`submit_as_hold`).
    Held,
    Running,
    /// Paused with the cgroup freezer (`docker pause`).
    Suspended,
    /// Exited; its restart policy starts it again. Slots stay held.
    Restarting,
    Terminating,
    /// Ended; its results are being uploaded. Slots stay held.
    Uploading,
    Done,
    Failed,
    Cancelled,
}

/// What can happen to a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    PullStarted,
    PullFinished,
    /// The container exists; `held` keeps it from starting.
    Created {
        held: bool,
    },
    Release,
    Started,
    Suspend,
    Resume,
    /// The container exited and its restart policy will start it again.
    Restarted,
    /// A stop was requested (grace period, then kill).
    Terminate,
    /// The container ended; `success` is exit code 0 and not OOM-killed.
    Exited {
        success: bool,
    },
    /// A system error (pull, create, start failed).
    Fail,
    /// The container ended and its results are uploaded now.
    UploadStarted,
    /// The upload ended; `success`: the kernel exited 0 and its results are stored.
    Uploaded {
        success: bool,
    },
    /// After an agent restart, a kernel whose creation was cut short (or a held kernel whose
    /// instance vanished) is created again from the start.
    Relaunch,
}

/// The DRMAA2 job state matching a kernel state (what `inspect` shows beside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drmaa2State {
    Queued,
    QueuedHeld,
    Running,
    Suspended,
    Done,
    Failed,
}

/// An operation that the kernel's state does not allow (FAILED_PRECONDITION).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {op} a kernel that is {state}")]
pub struct TransitionError {
    pub state: KernelState,
    pub op: &'static str,
}

impl KernelState {
    /// The state after `t`, or an error naming the current state.
    pub fn apply(self, t: Transition) -> Result<KernelState, TransitionError> {
        use KernelState::*;
        use Transition::*;
        let next = match (self, t) {
            (Preparing, PullStarted) => Pulling,
            (Pulling, PullFinished) => Creating,
            (Preparing, Created { held })
            | (Pulling, Created { held })
            | (Creating, Created { held }) => {
                if held {
                    Held
                } else {
                    Creating
                }
            }
            (Held, Release) => Creating,
            (Creating | Restarting, Started) => Running,
            (Running, Restarted) => Restarting,
            (Running, Suspend) => Suspended,
            (Suspended, Resume) => Running,
            (Preparing | Pulling | Creating | Held, Terminate) => Cancelled,
            (Running | Suspended | Restarting, Terminate) => Terminating,
            (Running | Suspended | Restarting | Terminating, Exited { success: true }) => Done,
            (
                Running | Suspended | Restarting | Terminating | Creating,
                Exited { success: false },
            ) => Failed,
            (Running | Suspended | Restarting | Terminating | Creating, UploadStarted) => Uploading,
            (Uploading, Uploaded { success: true }) => Done,
            (Uploading, Uploaded { success: false }) => Failed,
            (Preparing | Pulling | Creating | Held, Relaunch) => Preparing,
            (s, Fail) if !s.is_final() => Failed,
            (s, t) => {
                return Err(TransitionError {
                    state: s,
                    op: t.verb(),
                })
            }
        };
        Ok(next)
    }

    /// DONE, FAILED and CANCELLED never change again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }

    /// Whether the kernel holds its slots (CPU, memory, GPUs, ports) in this state.
    pub fn holds_resources(self) -> bool {
        !self.is_final()
    }

    pub fn drmaa2(self) -> Drmaa2State {
        match self {
            // The DRMAA2 Docker tracker reads Docker's "restarting" as Queued.
            Self::Preparing | Self::Pulling | Self::Creating | Self::Restarting => {
                Drmaa2State::Queued
            }
            Self::Held => Drmaa2State::QueuedHeld,
            // Uploading results is still the job's work: DRMAA2 has no state for it.
            Self::Running | Self::Terminating | Self::Uploading => Drmaa2State::Running,
            Self::Suspended => Drmaa2State::Suspended,
            Self::Done => Drmaa2State::Done,
            Self::Failed | Self::Cancelled => Drmaa2State::Failed,
        }
    }
}

impl KernelState {
    /// Qarnot's task state: `stopped` says the kernel was stopped on request (a stopped
    /// task is Cancelled on Qarnot, however its process ended).
    pub fn qarnot(self, stopped: bool) -> &'static str {
        match self {
            Self::Preparing => "Submitted",
            Self::Pulling | Self::Creating | Self::Held => "Dispatched",
            Self::Running | Self::Suspended | Self::Restarting | Self::Terminating => "Executing",
            Self::Uploading => "UploadingResults",
            Self::Done => "Success",
            Self::Failed if stopped => "Cancelled",
            Self::Failed => "Failure",
            Self::Cancelled => "Cancelled",
        }
    }
}

impl Drmaa2State {
    /// The DRMAA2 spelling: `QUEUED_HELD`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::QueuedHeld => "QUEUED_HELD",
            Self::Running => "RUNNING",
            Self::Suspended => "SUSPENDED",
            Self::Done => "DONE",
            Self::Failed => "FAILED",
        }
    }
}

impl Transition {
    fn verb(self) -> &'static str {
        match self {
            Self::PullStarted => "start pulling for",
            Self::PullFinished => "finish pulling for",
            Self::Created { .. } => "create",
            Self::Release => "release",
            Self::Started => "start",
            Self::Suspend => "suspend",
            Self::Resume => "resume",
            Self::Restarted => "restart",
            Self::Terminate => "stop",
            Self::Exited { .. } => "report an exit of",
            Self::Fail => "fail",
            Self::UploadStarted => "upload the results of",
            Self::Uploaded { .. } => "finish uploading the results of",
            Self::Relaunch => "create again",
        }
    }
}

impl fmt::Display for KernelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Preparing => "PREPARING",
            Self::Pulling => "PULLING",
            Self::Creating => "CREATING",
            Self::Held => "HELD",
            Self::Running => "RUNNING",
            Self::Suspended => "SUSPENDED",
            Self::Restarting => "RESTARTING",
            Self::Terminating => "TERMINATING",
            Self::Uploading => "UPLOADING",
            Self::Done => "DONE",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        };
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::KernelState::*;
    use super::Transition::*;
    use super::*;

    fn run(start: KernelState, ts: &[Transition]) -> Result<KernelState, TransitionError> {
        ts.iter().try_fold(start, |s, t| s.apply(*t))
    }

    #[test]
    fn a_pulled_kernel_runs_and_finishes() {
        let end = run(
            Preparing,
            &[
                PullStarted,
                PullFinished,
                Created { held: false },
                Started,
                Exited { success: true },
            ],
        );
        assert_eq!(end, Ok(Done));
    }

    #[test]
    fn a_held_kernel_starts_only_after_release() {
        let held = run(Preparing, &[Created { held: true }]).unwrap();
        assert_eq!(held, Held);
        assert_eq!(held.drmaa2(), Drmaa2State::QueuedHeld);
        assert!(held.apply(Started).is_err());
        assert_eq!(run(held, &[Release, Started]), Ok(Running));
    }

    #[test]
    fn suspended_reads_suspended_and_resumes_to_running() {
        let s = run(Running, &[Suspend]).unwrap();
        assert_eq!(s.drmaa2(), Drmaa2State::Suspended);
        assert_eq!(s.apply(Resume), Ok(Running));
    }

    #[test]
    fn a_wrong_state_error_names_the_state_and_the_operation() {
        let err = Held.apply(Suspend).unwrap_err();
        assert_eq!(err.to_string(), "cannot suspend a kernel that is HELD");
    }

    #[test]
    fn stopping_before_start_cancels_and_after_start_terminates() {
        assert_eq!(Held.apply(Terminate), Ok(Cancelled));
        assert_eq!(
            run(Running, &[Terminate, Exited { success: false }]),
            Ok(Failed)
        );
    }

    #[test]
    fn a_restarting_kernel_reads_queued_and_runs_again_or_ends() {
        let r = Running.apply(Restarted).unwrap();
        assert_eq!(r, Restarting);
        assert_eq!(r.drmaa2(), Drmaa2State::Queued);
        assert!(r.holds_resources());
        assert_eq!(r.apply(Started), Ok(Running));
        assert_eq!(r.apply(Exited { success: false }), Ok(Failed));
        assert_eq!(r.apply(Terminate), Ok(Terminating));
        assert!(r.apply(Suspend).is_err());
    }

    #[test]
    fn an_ended_kernel_with_results_uploads_then_ends_holding_its_slots_meanwhile() {
        let u = run(Running, &[Terminate, UploadStarted]).unwrap();
        assert_eq!(u, Uploading);
        assert!(u.holds_resources());
        assert_eq!(u.qarnot(false), "UploadingResults");
        assert!(u.apply(Terminate).is_err(), "an upload is not stopped");
        assert_eq!(u.apply(Uploaded { success: true }), Ok(Done));
        assert_eq!(u.apply(Uploaded { success: false }), Ok(Failed));
        assert_eq!(u.apply(Fail), Ok(Failed));
        assert!(Running.apply(Uploaded { success: true }).is_err());
    }

    #[test]
    fn an_interrupted_creation_starts_over_but_a_started_kernel_never_does() {
        for s in [Preparing, Pulling, Creating, Held] {
            assert_eq!(s.apply(Relaunch), Ok(Preparing), "{s}");
        }
        for s in [Running, Suspended, Restarting, Terminating, Uploading] {
            let err = s.apply(Relaunch).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("cannot create again a kernel that is {s}")
            );
        }
    }

    #[test]
    fn qarnot_states_follow_the_lifecycle() {
        assert_eq!(Preparing.qarnot(false), "Submitted");
        assert_eq!(Pulling.qarnot(false), "Dispatched");
        assert_eq!(Running.qarnot(false), "Executing");
        assert_eq!(Done.qarnot(false), "Success");
        assert_eq!(Failed.qarnot(false), "Failure");
        assert_eq!(Failed.qarnot(true), "Cancelled");
        assert_eq!(Cancelled.qarnot(false), "Cancelled");
    }

    #[test]
    fn final_states_accept_nothing() {
        let all = [
            PullStarted,
            PullFinished,
            Created { held: false },
            Release,
            Started,
            Suspend,
            Resume,
            Restarted,
            Terminate,
            Exited { success: true },
            Fail,
            UploadStarted,
            Uploaded { success: true },
            Relaunch,
        ];
        for s in [Done, Failed, Cancelled] {
            for t in all {
                assert!(s.apply(t).is_err(), "{s} accepted {t:?}");
            }
        }
    }
}
