//! Named failpoints for the crash tests: compiled in only with the `failpoints` feature (the
//! integration tests enable it through a dev-dependency), inert otherwise.
//!
//! `RSVAULT_FAILPOINTS=name=action[,name=action...]`, where action is `panic` (the job task
//! panics) or `abort` (the whole process dies at once, as with `kill -9`).
//!
//! | name | where |
//! |---|---|
//! | `job.started` | a job was marked started, before any engine work |
//! | `backup.before_record` | the engine committed the snapshot; its recovery point is not recorded yet |
//! | `backup.after_record` | the recovery point is recorded; the job is not finished yet |

/// Triggers the action configured for `name`, if any.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    let Ok(spec) = std::env::var("RSVAULT_FAILPOINTS") else {
        return;
    };
    for entry in spec.split(',') {
        match entry.split_once('=') {
            Some((n, "panic")) if n == name => panic!("failpoint {name}"),
            Some((n, "abort")) if n == name => {
                eprintln!("failpoint {name}: aborting");
                std::process::abort();
            }
            _ => {}
        }
    }
}

/// Failpoints are compiled out of normal builds.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
