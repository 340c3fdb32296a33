//! Vault maintenance jobs: garbage collection (retention, orphan cleanup, prune) and
//! verification, plus the retention preview both the REST endpoint and the CLI show.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rsvault_engine::worker::{Request, Response};
use rsvault_engine::Error as EngineError;
use serde::Serialize;

use crate::context::{engine_call, keyed_repo_config, repo_exists, Ctx, Outcome};
use crate::retention::{self, Decision, PointIn, Protection};
use crate::service::{Service, K_ITEM, K_POLICY, K_RP};
use rsvault_types::job::{codes, Job, JobError};
use rsvault_types::model::{Item, RecoveryPoint, Vault, Workload};

#[derive(Debug, Serialize)]
pub struct ItemPreview {
    pub item: String,
    pub policy: Option<String>,
    #[serde(rename = "protectionState")]
    pub protection_state: String,
    pub points: Vec<Decision>,
}

fn store_err(e: rsvault_store::Error) -> EngineError {
    EngineError::Repository(format!("metadata store: {e}"))
}

/// Retention decisions for every item of a vault, as of `now`.
pub fn preview(
    svc: &Service,
    vault: &Vault,
    now: DateTime<Utc>,
) -> Result<Vec<ItemPreview>, rsvault_store::Error> {
    let key = vault.vault.key();
    let items: Vec<Item> = svc.store.read(|tx| tx.list(K_ITEM, &key, None))?;
    let mut out = Vec::new();
    for it in items {
        let points = svc.recovery_points(vault, &it.key())?;
        let policy: Option<rsvault_types::model::Policy> = match &it.policy {
            Some(p) => svc
                .store
                .read(|tx| tx.get(K_POLICY, &key, &p.to_ascii_lowercase()))?,
            None => None,
        };
        let tz = policy
            .as_ref()
            .and_then(|p| {
                crate::schedule::parse_tz(p.properties.get("timeZone").and_then(|v| v.as_str()))
                    .ok()
            })
            .unwrap_or(chrono_tz::Tz::UTC);
        let protection = if it.protection_state == "ProtectionStopped" {
            Protection::StoppedRetainData
        } else {
            Protection::Protected
        };
        let ins: Vec<PointIn> = points
            .iter()
            .filter(|p| !p.damaged)
            .map(|p| PointIn {
                id: p.id.clone(),
                time: p.time,
                scheduled: p.scheduled,
                explicit_expiry: p.expiry,
            })
            .collect();
        let mut decisions = retention::evaluate(
            policy
                .as_ref()
                .and_then(|p| p.properties.get("retentionPolicy")),
            tz,
            &ins,
            protection,
            now,
        );
        // Damaged points are listed but never count as the item's last good copy.
        for p in points.iter().filter(|p| p.damaged) {
            decisions.push(Decision {
                id: p.id.clone(),
                time: p.time,
                expiry: p.expiry,
                keep: p.expiry.is_none_or(|e| e > now),
                reason: "verification found this point damaged".into(),
            });
        }
        // Garbage collection never touches a soft-deleted item's points: its purge does.
        if let Some(sd) = it.soft_deleted {
            for d in &mut decisions {
                d.keep = true;
                d.reason = format!(
                    "soft-deleted: kept until the item is purged at {}",
                    rsvault_types::arm::time(sd.purge_at)
                );
            }
        }
        out.push(ItemPreview {
            item: it.name.clone(),
            policy: it.policy.clone(),
            protection_state: it.protection_state.clone(),
            points: decisions,
        });
    }
    Ok(out)
}

pub(crate) async fn garbage_collect(
    svc: &Arc<Service>,
    vault: &Vault,
    job: &Job,
    ctx: Arc<Ctx>,
) -> Result<Outcome, EngineError> {
    let now = Utc::now();
    let key = vault.vault.key();
    let previews = preview(svc, vault, now).map_err(store_err)?;
    let expired: Vec<String> = previews
        .iter()
        .flat_map(|p| p.points.iter())
        .filter(|d| !d.keep)
        .map(|d| d.id.clone())
        .collect();
    let all_points: Vec<RecoveryPoint> = svc
        .store
        .read(|tx| tx.list(K_RP, &key, None))
        .map_err(store_err)?;
    let expired_set: HashSet<&str> = expired.iter().map(String::as_str).collect();
    let mut forget: Vec<String> = all_points
        .iter()
        .filter(|p| expired_set.contains(p.id.as_str()))
        .map(|p| p.snapshot_id.clone())
        .collect();
    // Record each point's computed expiry so the API shows what the policy says.
    svc.store
        .tx(|tx| {
            for pv in &previews {
                for d in &pv.points {
                    if let Some(mut rp) = all_points.iter().find(|p| p.id == d.id).cloned() {
                        if rp.expiry != d.expiry && d.keep {
                            rp.expiry = d.expiry;
                            tx.put(K_RP, &key, &rp.id, &rp.item_key, &rp)?;
                        }
                    }
                }
            }
            Ok(())
        })
        .map_err(store_err)?;

    let repo = keyed_repo_config(&ctx, vault, false).await?;
    if !repo_exists(&ctx, &repo).await? {
        svc.update_job(&job.id, |j| {
            j.property_bag
                .insert("Recovery Points Expired".into(), "0".into());
            j.property_bag
                .insert("Orphan Snapshots Removed".into(), "0".into());
        })
        .map_err(store_err)?;
        return Ok(Outcome::Done { warnings: vec![] });
    }
    // Snapshots no recovery point refers to (a crash between commit and record) are orphans:
    // this job holds the vault exclusively, so no backup is writing one right now.
    let known: HashSet<&str> = all_points.iter().map(|p| p.snapshot_id.as_str()).collect();
    let snaps = match engine_call(svc, &ctx, Request::Snapshots { repo: repo.clone() }).await? {
        Response::Snapshots(s) => s,
        other => {
            return Err(EngineError::Worker(format!(
                "unexpected worker answer {other:?}"
            )))
        }
    };
    let orphans: Vec<String> = snaps
        .iter()
        .filter(|s| !known.contains(s.id.as_str()))
        .map(|s| s.id.clone())
        .collect();
    forget.extend(orphans.iter().cloned());
    if !forget.is_empty() {
        engine_call(
            svc,
            &ctx,
            Request::Forget {
                repo: repo.clone(),
                ids: forget,
            },
        )
        .await?;
    }
    svc.store
        .tx(|tx| {
            for id in &expired {
                tx.delete(K_RP, &key, id)?;
            }
            Ok(())
        })
        .map_err(store_err)?;
    let _ = svc.update_job(&job.id, |j| {
        j.complete_task(0);
        j.start_task(1);
    });
    if ctx.is_cancelled_now() {
        return Ok(Outcome::Cancelled);
    }
    engine_call(svc, &ctx, Request::Prune { repo }).await?;
    svc.update_job(&job.id, |j| {
        j.property_bag
            .insert("Recovery Points Expired".into(), expired.len().to_string());
        j.property_bag
            .insert("Orphan Snapshots Removed".into(), orphans.len().to_string());
    })
    .map_err(store_err)?;
    Ok(Outcome::Done { warnings: vec![] })
}

pub(crate) async fn verify(
    svc: &Arc<Service>,
    vault: &Vault,
    job: &Job,
    ctx: Arc<Ctx>,
    read_data_percent: Option<u8>,
) -> Result<Outcome, EngineError> {
    let key = vault.vault.key();
    let repo = keyed_repo_config(&ctx, vault, false).await?;
    let now = Utc::now();
    let report = if repo_exists(&ctx, &repo).await? {
        match engine_call(
            svc,
            &ctx,
            Request::Verify {
                repo,
                read_data_percent,
            },
        )
        .await?
        {
            Response::Verify(r) => r,
            other => {
                return Err(EngineError::Worker(format!(
                    "unexpected worker answer {other:?}"
                )))
            }
        }
    } else {
        rsvault_engine::VerifyReport {
            ok: true,
            ..Default::default()
        }
    };
    let damaged: HashSet<&str> = report
        .damaged_snapshots
        .iter()
        .map(String::as_str)
        .collect();
    let mut findings = Vec::new();
    svc.store
        .tx(|tx| {
            let points: Vec<RecoveryPoint> = tx.list(K_RP, &key, None)?;
            let mut bad_items = HashSet::new();
            for mut p in points {
                let is_bad = damaged.contains(p.snapshot_id.as_str())
                    || report
                        .damaged_snapshots
                        .iter()
                        .any(|d| p.snapshot_id.starts_with(d.as_str()));
                if is_bad != p.damaged {
                    p.damaged = is_bad;
                    tx.put(K_RP, &key, &p.id, &p.item_key, &p)?;
                }
                if is_bad {
                    bad_items.insert(p.item_key.clone());
                    findings.push(JobError {
                        code: codes::REPOSITORY,
                        title: "Recovery point damaged".into(),
                        message: format!(
                            "Recovery point {} ({}) failed verification.",
                            p.id, p.item_key
                        ),
                        recommendations: vec![
                            "Take a new backup of the item; restore from another recovery point."
                                .into(),
                        ],
                    });
                }
            }
            let items: Vec<Item> = tx.list(K_ITEM, &key, None)?;
            for mut it in items {
                it.last_verified = Some(now);
                if bad_items.contains(&it.key()) {
                    it.health_status = "ActionRequired".into();
                }
                let parent = it.policy.clone().unwrap_or_default().to_ascii_lowercase();
                tx.put(K_ITEM, &key, &it.key(), &parent, &it)?;
            }
            Ok(())
        })
        .map_err(store_err)?;
    for f in report.damaged_files.iter().take(50) {
        findings.push(JobError {
            code: codes::REPOSITORY,
            title: "File data damaged".into(),
            message: format!("{f} cannot be restored intact."),
            recommendations: vec!["Restore this file from another recovery point.".into()],
        });
    }
    if !report.ok && findings.is_empty() {
        for e in report.errors.iter().take(20) {
            findings.push(JobError {
                code: codes::REPOSITORY,
                title: "Repository check".into(),
                message: e.clone(),
                recommendations: vec!["Run garbage collection, then verify again.".into()],
            });
        }
    }
    svc.update_job(&job.id, |j| {
        j.property_bag.insert(
            "Data Read".into(),
            read_data_percent
                .map(|p| format!("{p}%"))
                .unwrap_or_else(|| "100%".into()),
        );
        j.property_bag.insert(
            "Damaged Recovery Points".into(),
            report.damaged_snapshots.len().to_string(),
        );
    })
    .map_err(store_err)?;
    Ok(Outcome::Warned(findings))
}

/// A restore drill (issue #13): each item's newest recovery point gets a sample of its files
/// restored into scratch space below the data dir and compared with the snapshot. Items that
/// pass are recorded as proven restorable now; the others are findings that name them (the job
/// ends `CompletedWithWarnings`). An engine failure on one item (a worker that crashed on damaged
/// data, say) is that item's finding; the other items are still drilled.
pub(crate) async fn restore_drill(
    svc: &Arc<Service>,
    vault: &Vault,
    job: &Job,
    ctx: Arc<Ctx>,
    sample_percent: u8,
) -> Result<Outcome, EngineError> {
    use crate::joblog::Level;
    let key = vault.vault.key();
    let items: Vec<Item> = svc
        .store
        .read(|tx| tx.list(K_ITEM, &key, None))
        .map_err(store_err)?;
    let items: Vec<Item> = items
        .into_iter()
        .filter(|it| it.last_snapshot.is_some())
        .collect();
    let scratch_root = svc.data_dir.join("drills").join(&job.id);
    let mut findings = Vec::new();
    let mut proven = 0;
    let repo = if items.is_empty() {
        None
    } else {
        Some(keyed_repo_config(&ctx, vault, false).await?)
    };
    for (n, it) in items.iter().enumerate() {
        let (Some(repo), Some(snapshot_id)) = (repo.clone(), it.last_snapshot.clone()) else {
            continue;
        };
        let spec = rsvault_engine::DrillSpec {
            snapshot_id,
            scratch: scratch_root.join(n.to_string()),
            sample_percent,
            seed: rand::random(),
            // Every file of a VM's snapshot is a disk image: check each by a sample of its ranges.
            ranged_above_bytes: match it.workload {
                Workload::Vm => 0,
                Workload::FileShare => rsvault_engine::DRILL_RANGED_ABOVE_BYTES,
            },
        };
        let answer = engine_call(svc, &ctx, Request::Drill { repo, spec }).await;
        let problems = match answer {
            Ok(Response::Drill(report)) if report.mismatches.is_empty() => {
                svc.log_job(
                    &job.id,
                    Level::Info,
                    &format!(
                        "{}: {} files, {} bytes restored and identical to the snapshot ({} large files checked by a sample of their ranges).",
                        it.friendly_name, report.files, report.bytes, report.ranged_files
                    ),
                );
                let now = Utc::now();
                svc.store
                    .tx(|tx| {
                        if let Some(mut cur) = tx.get::<Item>(K_ITEM, &key, &it.key())? {
                            cur.proven_restorable = Some(now);
                            let parent =
                                cur.policy.clone().unwrap_or_default().to_ascii_lowercase();
                            tx.put(K_ITEM, &key, &cur.key(), &parent, &cur)?;
                        }
                        Ok(())
                    })
                    .map_err(store_err)?;
                proven += 1;
                continue;
            }
            Ok(Response::Drill(report)) => report.mismatches,
            Ok(other) => vec![format!("unexpected worker answer {other:?}")],
            Err(EngineError::Cancelled) => {
                let _ = std::fs::remove_dir_all(&scratch_root);
                return Err(EngineError::Cancelled);
            }
            Err(e) => vec![format!("{e}")],
        };
        for p in problems.iter().take(20) {
            svc.log_job(
                &job.id,
                Level::Warning,
                &format!("{}: {p}", it.friendly_name),
            );
        }
        findings.push(JobError {
            code: codes::REPOSITORY,
            title: "Restore drill failed".into(),
            message: format!(
                "The newest recovery point of '{}' ({}) did not restore as recorded: {}",
                it.friendly_name,
                it.key(),
                problems.join("; ")
            ),
            recommendations: vec![
                "Run verification on the vault, then take a new backup of the item.".into(),
            ],
        });
    }
    // A worker that died mid-drill leaves its scratch behind: none of it outlives the job.
    if scratch_root.exists() {
        let _ = std::fs::remove_dir_all(&scratch_root);
    }
    svc.update_job(&job.id, |j| {
        j.property_bag
            .insert("Sample".into(), format!("{sample_percent}%"));
        j.property_bag
            .insert("Items Proven Restorable".into(), proven.to_string());
        j.property_bag
            .insert("Items Failed".into(), findings.len().to_string());
    })
    .map_err(store_err)?;
    Ok(Outcome::Warned(findings))
}
