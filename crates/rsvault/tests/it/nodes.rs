//! Several nodes on one store (issue #8): the server under test is one node, an in-process
//! service on the same store (its own node id, its own dispatcher) is another.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;
use crate::policies::in_process_service;

/// A server whose share backup takes ~10 s, with the backup running: (server, vault, item, job).
fn slow_backup(env: &Env, lease_seconds: u64) -> (Server, String, String, String) {
    let s = Server::start(
        env,
        &format!(
            "[limits]\nbackup_bytes_per_second = 2097152\n[runner]\nlease_seconds = {lease_seconds}"
        ),
    );
    let big: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761).rotate_left(9) >> 3) as u8)
        .collect();
    std::fs::write(env.path("share/big.bin"), &big).unwrap();
    let (v, item) = s.protected_share("v1");
    let job = s.backup(&item);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = s.get(&format!("{v}/backupJobs/{job}"));
        if j["properties"]["extendedInfo"]["propertyBag"]
            .get("Bytes Done")
            .is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "never started: {j}");
        std::thread::sleep(Duration::from_millis(100));
    }
    (s, v, item, job)
}

fn vault_ref() -> rsvault_types::model::VaultRef {
    rsvault_types::model::VaultRef {
        sub: SUB.into(),
        rg: "rg1".into(),
        name: "v1".into(),
    }
}

#[test]
fn a_cancel_made_through_another_node_stops_the_job_within_two_seconds() {
    let env = Env::new();
    let (s, v, item, job) = slow_backup(&env, 30);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let other = in_process_service(&s);
    let vault = other.get_vault(&vault_ref()).unwrap();
    let asked = Instant::now();
    other.request_cancel(&vault, &job).unwrap();
    let deadline = asked + Duration::from_secs(2);
    let j = loop {
        let j = s.get(&format!("{v}/backupJobs/{job}"));
        if j["properties"]["status"] != "Cancelling" && j["properties"]["status"] != "InProgress" {
            break j;
        }
        assert!(Instant::now() < deadline, "cancel not seen within 2 s: {j}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(j["properties"]["status"], "Cancelled", "{j}");
    assert!(s.recovery_points(&item).is_empty());
}

#[test]
fn a_killed_nodes_job_is_failed_by_another_node_naming_it() {
    let env = Env::new();
    let lease = 3;
    let (mut s, v, item, job) = slow_backup(&env, lease);
    let running: Value = s.get(&format!("{v}/backupJobs/{job}"));
    let node = running["properties"]["extendedInfo"]["propertyBag"]["Node"]
        .as_str()
        .unwrap()
        .to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let other = in_process_service(&s);
    let vault = other.get_vault(&vault_ref()).unwrap();
    s.kill9();
    let killed = Instant::now();

    let deadline = killed + Duration::from_secs(lease + 15);
    let j = loop {
        let j = other.get_job(&vault, &job).unwrap();
        if j.status.is_terminal() {
            break j;
        }
        assert!(Instant::now() < deadline, "not reaped in time: {j:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(j.status, rsvault_types::job::JobStatus::Failed);
    assert!(
        j.errors[0].message.contains(&node),
        "the error names the lost node {node}: {:?}",
        j.errors
    );
    // No recovery point from it; the next backup of the item completes (on whichever node
    // claims it: a restarted server on this data dir, or the in-process one).
    let (data, config) = (s.data.clone(), s.config.clone());
    drop(s);
    std::fs::remove_file(env.path("share/big.bin")).unwrap();
    let s2 = Server::start_with(&data, &config);
    assert!(s2.recovery_points(&item).is_empty());
    let next = s2.backup(&item);
    assert_eq!(s2.wait_job(&v, &next)["properties"]["status"], "Completed");
    assert_eq!(s2.recovery_points(&item).len(), 1);
}
