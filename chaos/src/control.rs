//! Line-oriented run-time control of a set of named proxies, for the CLI (stdin) or a test
//! harness. Parsing and applying are pure functions over [`ProxyControl`] handles; reading the
//! lines is left to the caller.
//!
//! Commands, one per line:
//! - `set <link> <json>`: put faults in force, e.g. `set us-eu {"latency_ms":40,"loss_percent":1}`
//! - `heal <link>` or `heal all`: remove every fault
//! - `faults [<link>]`: print faults in force, as JSON
//! - `stats [<link>]`: print counters, as JSON
//! - `help`

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fault::LinkFaults;
use crate::proxy::{ProxyControl, ProxyStats};

/// Longest control line accepted, in bytes.
pub const MAX_CONTROL_LINE_BYTES: usize = 64 * 1024;

/// One parsed control command.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlCommand {
    /// Replace a link's faults.
    Set {
        /// Link name.
        link: String,
        /// New faults.
        faults: LinkFaults,
    },
    /// Heal one link, or all when `None`.
    Heal(Option<String>),
    /// Show faults of one link, or all when `None`.
    Faults(Option<String>),
    /// Show counters of one link, or all when `None`.
    Stats(Option<String>),
    /// Show the command list.
    Help,
}

/// Usage text for `help` and parse errors.
pub const CONTROL_HELP: &str = "commands: set <link> <json faults> | heal <link>|all | faults [<link>] | stats [<link>] | help";

/// Parses one line. Errors are human-readable messages to send back.
pub fn parse_command(line: &str) -> Result<ControlCommand, String> {
    let line = line.trim();
    let (verb, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let optional_link = |rest: &str| (!rest.is_empty()).then(|| rest.to_string());
    match verb {
        "set" => {
            let (link, json) = rest
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("usage: set <link> <json faults>; {CONTROL_HELP}"))?;
            let faults: LinkFaults =
                serde_json::from_str(json.trim()).map_err(|e| format!("bad faults JSON: {e}"))?;
            faults.validate().map_err(|e| e.to_string())?;
            Ok(ControlCommand::Set {
                link: link.to_string(),
                faults,
            })
        }
        "heal" => match rest {
            "" => Err("usage: heal <link>|all".to_string()),
            "all" => Ok(ControlCommand::Heal(None)),
            link => Ok(ControlCommand::Heal(Some(link.to_string()))),
        },
        "faults" => Ok(ControlCommand::Faults(optional_link(rest))),
        "stats" => Ok(ControlCommand::Stats(optional_link(rest))),
        "help" => Ok(ControlCommand::Help),
        other => Err(format!("unknown command {other:?}; {CONTROL_HELP}")),
    }
}

#[derive(Serialize, Deserialize)]
struct LinkStatus {
    faults: LinkFaults,
    stats: ProxyStats,
}

/// Applies a command to the named proxies and returns the one-line reply (JSON for queries).
pub fn apply_command(
    command: &ControlCommand,
    links: &BTreeMap<String, ProxyControl>,
) -> Result<String, String> {
    let pick = |link: &Option<String>| -> Result<Vec<(&String, &ProxyControl)>, String> {
        match link {
            None => Ok(links.iter().collect()),
            Some(name) => links
                .get_key_value(name)
                .map(|entry| vec![entry])
                .ok_or_else(|| format!("no link named {name:?}")),
        }
    };
    match command {
        ControlCommand::Set { link, faults } => {
            let control = links
                .get(link)
                .ok_or_else(|| format!("no link named {link:?}"))?;
            control
                .set_faults(faults.clone())
                .map_err(|e| e.to_string())?;
            Ok(format!("ok {link}"))
        }
        ControlCommand::Heal(link) => {
            let picked = pick(link)?;
            for (_, control) in &picked {
                control.heal();
            }
            Ok(format!("ok healed {}", picked.len()))
        }
        ControlCommand::Faults(link) => {
            let map: BTreeMap<&String, LinkFaults> = pick(link)?
                .into_iter()
                .map(|(name, control)| (name, control.faults()))
                .collect();
            Ok(to_json(&map))
        }
        ControlCommand::Stats(link) => {
            let map: BTreeMap<&String, LinkStatus> = pick(link)?
                .into_iter()
                .map(|(name, control)| {
                    (
                        name,
                        LinkStatus {
                            faults: control.faults(),
                            stats: control.stats(),
                        },
                    )
                })
                .collect();
            Ok(to_json(&map))
        }
        ControlCommand::Help => Ok(CONTROL_HELP.to_string()),
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Maps of plain structs with string keys always serialise; report rather than panic anyway.
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn links() -> BTreeMap<String, ProxyControl> {
        let mut links = BTreeMap::new();
        links.insert(
            "a".to_string(),
            ProxyControl::new(LinkFaults::clean()).unwrap(),
        );
        links.insert(
            "b".to_string(),
            ProxyControl::new(LinkFaults::clean()).unwrap(),
        );
        links
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(
            parse_command("set a {\"latency_ms\": 40, \"blackhole\": true}").unwrap(),
            ControlCommand::Set {
                link: "a".into(),
                faults: LinkFaults {
                    latency_ms: 40,
                    blackhole: true,
                    ..LinkFaults::default()
                }
            }
        );
        assert_eq!(
            parse_command("  heal all \n").unwrap(),
            ControlCommand::Heal(None)
        );
        assert_eq!(
            parse_command("heal a").unwrap(),
            ControlCommand::Heal(Some("a".into()))
        );
        assert_eq!(parse_command("stats").unwrap(), ControlCommand::Stats(None));
        assert_eq!(
            parse_command("faults b").unwrap(),
            ControlCommand::Faults(Some("b".into()))
        );
        assert_eq!(parse_command("help").unwrap(), ControlCommand::Help);
    }

    #[test]
    fn rejects_bad_input_with_a_message() {
        assert!(parse_command("set a").unwrap_err().contains("usage"));
        assert!(parse_command("set a {bad").unwrap_err().contains("JSON"));
        assert!(
            parse_command("set a {\"loss_percent\": 150}")
                .unwrap_err()
                .contains("loss_percent")
        );
        assert!(parse_command("heal").is_err());
        assert!(parse_command("explode").unwrap_err().contains("unknown"));
    }

    #[test]
    fn applies_to_the_named_links() {
        let links = links();
        let set = parse_command("set a {\"loss_percent\": 2.5}").unwrap();
        assert_eq!(apply_command(&set, &links).unwrap(), "ok a");
        assert_eq!(links["a"].faults().loss_percent, 2.5);
        assert_eq!(links["b"].faults(), LinkFaults::clean());

        let faults = apply_command(&ControlCommand::Faults(None), &links).unwrap();
        let value: serde_json::Value = serde_json::from_str(&faults).unwrap();
        assert_eq!(value["a"]["loss_percent"], 2.5);
        assert_eq!(value["b"]["loss_percent"], 0.0);

        let stats = apply_command(&ControlCommand::Stats(Some("b".into())), &links).unwrap();
        let value: serde_json::Value = serde_json::from_str(&stats).unwrap();
        assert_eq!(value["b"]["stats"]["upstream"]["forwarded_packets"], 0);
        assert!(value.get("a").is_none());

        assert_eq!(
            apply_command(&ControlCommand::Heal(None), &links).unwrap(),
            "ok healed 2"
        );
        assert_eq!(links["a"].faults(), LinkFaults::clean());
        assert!(
            apply_command(&ControlCommand::Heal(Some("zz".into())), &links)
                .unwrap_err()
                .contains("zz")
        );
    }
}
