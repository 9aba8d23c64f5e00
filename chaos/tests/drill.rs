//! Drills: scenario files parse and are checked field by field; a drill against real cells
//! runs its steps, checks the history and judges the promises.

#![allow(clippy::unwrap_used)]

mod cells;

use cells::start_cell;
use meridian_chaos::drill::{self, DrillOptions, DrillRegion, Scenario};

#[test]
fn every_shipped_scenario_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let scenario = Scenario::from_toml(&text)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert!(
            !scenario.steps.is_empty() || !scenario.clock_offsets_ms.is_empty(),
            "{} has no fault",
            path.display()
        );
        count += 1;
    }
    assert!(count >= 3);
}

#[test]
fn a_bad_scenario_names_the_field() {
    let base = r#"
        name = "x"
        duration_ms = 1000
        [topic]
        name = "t"
        [workload]
        consumer_group = "g"
        rate_per_s = 10
    "#;
    assert!(Scenario::from_toml(base).is_ok());
    let cases = [
        (
            "[[steps]]\nat_percent = 120\naction = \"kill-region\"\nregion = \"a\"",
            "at_percent",
        ),
        (
            "[[steps]]\nat_percent = 10\naction = \"kill-region\"",
            "steps.region",
        ),
        (
            "[[steps]]\nat_percent = 10\naction = \"command\"",
            "steps.command",
        ),
        (
            "[[steps]]\nat_percent = 10\naction = \"explode\"\nregion = \"a\"",
            "scenario",
        ),
        (
            "[[steps]]\nat_percent = 10\naction = \"degrade-region\"\nregion = \"a\"",
            "steps.faults",
        ),
        (
            "[[steps]]\nat_percent = 10\naction = \"degrade-region\"\nregion = \"a\"\nfaults = { loss_percent = 140.0 }",
            "loss_percent",
        ),
        (
            "[[steps]]\nat_percent = 10\naction = \"partition-region\"",
            "steps.region",
        ),
    ];
    for (extra, field) in cases {
        let error = Scenario::from_toml(&format!("{base}\n{extra}"))
            .unwrap_err()
            .to_string();
        assert!(error.contains(field), "{extra}: {error}");
    }
    let standby = base.replace(
        "name = \"t\"",
        "name = \"t\"\ntopology = \"active-standby\"",
    );
    let error = Scenario::from_toml(&standby).unwrap_err().to_string();
    assert!(error.contains("topic.home"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_runs_its_steps_and_judges_the_promises() {
    let eu = start_cell("eu-west").await;
    let ap = start_cell("ap-south").await;
    let text = r#"
        name = "attached"
        duration_ms = 2000
        seed = 5
        [topic]
        name = "drill"
        fifo = true
        [workload]
        consumer_group = "drillers"
        message_groups = 4
        rate_per_s = 50
        drain_ms = 1500
        [[steps]]
        at_percent = 50
        action = "command"
        command = ["echo", "switchover via {region:ap-south}"]
        [promises]
        max_lost = 0
        max_duplicates = 0
        max_failed_sends = 0
        fifo_order = true
    "#;
    let scenario = Scenario::from_toml(text).unwrap();
    let mut regions = vec![
        DrillRegion {
            name: "eu-west".into(),
            endpoint: eu.addr.to_string(),
            process: None,
            links: Vec::new(),
            metrics: None,
        },
        DrillRegion {
            name: "ap-south".into(),
            endpoint: ap.addr.to_string(),
            process: None,
            links: Vec::new(),
            metrics: None,
        },
    ];
    let lines = std::sync::Mutex::new(Vec::new());
    let (report, history) = drill::run(
        &scenario,
        &mut regions,
        DrillOptions::default(),
        &|line: &str| lines.lock().unwrap().push(line.to_string()),
    )
    .await
    .unwrap();
    assert!(report.passed(), "{}", report.render());
    assert!(report.totals.acknowledged > 0);
    // Both cells are independent here (no replication): each consumer sees its own region's
    // sends, so the checker must be told nothing else; what matters is the step ran and was
    // recorded with the command's output.
    let note = history
        .events
        .iter()
        .find_map(|event| match event {
            meridian_chaos::Event::Fault { note, .. } => Some(note.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(note, format!("switchover via {}", ap.addr));
    assert!(
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains("Command"))
    );
    let rendered = report.render();
    assert!(rendered.contains("all promises kept"), "{rendered}");

    // A kill step on a region the drill does not own is a clear error.
    let kill = Scenario::from_toml(&text.replace(
        "action = \"command\"\n        command = [\"echo\", \"switchover via {region:ap-south}\"]",
        "action = \"kill-region\"\n        region = \"eu-west\"",
    ))
    .unwrap();
    let error = drill::run(&kill, &mut regions, DrillOptions::default(), &|_: &str| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("cannot be"), "{error}");
    for cell in [eu, ap] {
        cell.shutdown.send(true).unwrap();
        cell.server.await.unwrap();
    }
}
