//! `meridian topic switchover NAME --to REGION`: a planned move of an active-standby topic's
//! home, driven by the router's switchover state machine (`meridian_router::switchover`):
//! fence the old home through meta, wait until it has applied the fence and read its log end,
//! wait until the new home holds the old home's log up to there, then move the home (each meta
//! step a compare-and-set on the topic's epoch). Past `--timeout-ms` the switchover is aborted
//! and the old home takes writes again. Prints the write pause.

use std::time::Duration;

use anyhow::{Context, bail};
use meridian_meta::state::{Command as MetaCommand, Object, ObjectKind, Outcome, Topology};
use meridian_proto::admin::v1::{self as pb, admin_client::AdminClient};
use meridian_router::{Phase, Step, Switchover};
use serde_json::json;

use super::meta;
use super::{Target, connect, print_json};
use crate::region::routing::wall_ms;

/// How often the old and the new home are asked for their progress.
const POLL_INTERVAL_MS: u64 = 50;

async fn status(target: &Target, region: &str) -> anyhow::Result<pb::RegionStatusResponse> {
    let endpoint = target
        .resolve()?
        .into_iter()
        .find(|endpoint| endpoint.label == region)
        .with_context(|| format!("region {region} is not in the endpoints file"))?;
    let mut client = AdminClient::new(connect(&endpoint).await?);
    Ok(client
        .region_status(pb::RegionStatusRequest {})
        .await
        .with_context(|| format!("asking {region} for its status"))?
        .into_inner())
}

/// How far behind the old home the new one may be when the fence goes up: everything the old
/// home had one poll earlier. Waiting for this first keeps the write pause to the last poll's
/// worth of records, even when the new home has just returned from an outage (a failback).
async fn catch_up_before_fence(
    name: &str,
    from: &str,
    to: &str,
    timeout_ms: u64,
    target: &Target,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut previous_end: Option<u64> = None;
    loop {
        if started.elapsed() > Duration::from_millis(timeout_ms) {
            bail!(
                "switchover of {name}: {to} did not catch up with {from} within {timeout_ms} ms; \
                 nothing was fenced and {from} is still the home"
            );
        }
        let old_end = status(target, from).await?.log_end;
        let held = applied_from(&status(target, to).await?, from);
        if previous_end.is_some_and(|end| held >= end) {
            return Ok(());
        }
        previous_end = Some(old_end);
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

/// How far into `origin`'s log a region's status says it holds.
fn applied_from(status: &pb::RegionStatusResponse, origin: &str) -> u64 {
    status
        .origins
        .iter()
        .find(|entry| entry.origin_region == origin)
        .map_or(0, |entry| entry.applied_through)
}

pub(super) async fn switchover(
    name: &str,
    to: &str,
    timeout_ms: u64,
    target: &Target,
) -> anyhow::Result<()> {
    let access = meta::access(target)?.context(
        "a switchover goes through meta: give the endpoints file of a fabric that runs meta",
    )?;
    let (_, topics) = access.client.list(ObjectKind::Topics).await?;
    let topic = topics
        .into_iter()
        .find_map(|object| match object {
            Object::Topic(topic) if topic.spec.name == name => Some(topic),
            _ => None,
        })
        .with_context(|| format!("topic {name} does not exist in meta"))?;
    let Topology::ActiveStandby { home } = &topic.spec.topology else {
        bail!("topic {name} is active-active: it has no home to move");
    };
    let from = home.clone();
    catch_up_before_fence(name, &from, to, timeout_ms, target).await?;
    let fence = access
        .client
        .write(&MetaCommand::BeginTopicMove {
            topic: name.to_string(),
            new_home: to.to_string(),
            expected_epoch: topic.epoch,
        })
        .await
        .with_context(|| format!("fencing {from} for topic {name}"))?;
    let Outcome::Epoch { epoch } = fence.outcome else {
        bail!("meta answered the fence without an epoch");
    };
    let mut machine = Switchover::fenced(name, &from, to, epoch, wall_ms(), timeout_ms);
    // The fence counts once the old home has applied it and one more poll has passed, so that
    // a write that passed its gate just before is in its log end.
    let mut fence_seen = false;
    loop {
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        if let Some(Step::Abort {
            expected_epoch,
            reason,
        }) = machine.on_tick(wall_ms())
        {
            access
                .client
                .write(&MetaCommand::AbortTopicMove {
                    topic: name.to_string(),
                    expected_epoch,
                })
                .await
                .context("aborting the switchover")?;
            bail!("switchover of {name} aborted ({reason}); {from} is its home again");
        }
        match machine.phase {
            Phase::Fenced => {
                let old = status(target, &from).await?;
                if old.meta_applied_revision >= fence.revision {
                    if fence_seen {
                        machine.on_fence_confirmed(old.log_end)?;
                    }
                    fence_seen = true;
                }
            }
            Phase::CatchingUp { .. } => {
                let held = applied_from(&status(target, to).await?, &from);
                if let Some(Step::Commit { expected_epoch }) = machine.on_progress(held) {
                    access
                        .client
                        .write(&MetaCommand::MoveTopicHome {
                            topic: name.to_string(),
                            new_home: to.to_string(),
                            expected_epoch,
                        })
                        .await
                        .context("committing the move")?;
                    machine.on_committed(wall_ms())?;
                }
            }
            Phase::Committing | Phase::Done | Phase::Aborted { .. } => break,
        }
    }
    let pause_ms = machine.write_pause_ms().unwrap_or(0);
    if target.json {
        print_json(&json!({
            "topic": name,
            "from": from,
            "to": to,
            "epoch": epoch + 1,
            "write_pause_ms": pause_ms,
        }))?;
    } else {
        println!(
            "topic {name}: home moved from {from} to {to} (epoch {}); writes paused {pause_ms} ms",
            epoch + 1
        );
    }
    Ok(())
}
