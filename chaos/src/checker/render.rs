//! Plain-text rendering of a [`Report`]: a summary table, then one table per finding kind.

use std::fmt::{self, Write as _};

use super::{RepeatClass, Report};

/// Column-aligned plain-text table.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_string()).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self, out: &mut String) {
        let mut widths: Vec<usize> = self.header.iter().map(String::len).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(width) = widths.get_mut(i) {
                    *width = (*width).max(cell.len());
                }
            }
        }
        let line = |out: &mut String, cells: &[String]| {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let width = widths.get(i).copied().unwrap_or(0);
                let _ = write!(text, "{cell:<width$}  ");
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(out, &self.header);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(out, &rule);
        for row in &self.rows {
            line(out, row);
        }
    }
}

fn opt_ms(value: Option<u64>) -> String {
    value.map_or_else(|| "never".to_string(), |ms| format!("{ms} ms"))
}

impl Report {
    /// The report as plain-text tables for a terminal or a CI log.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let mut summary = Table::new(&["check", "result"]);
        let verdict = if self.is_clean() {
            "CLEAN"
        } else {
            "VIOLATIONS"
        };
        for (name, value) in [
            ("verdict", verdict.to_string()),
            ("events", self.events_count.to_string()),
            ("messages sent", self.sent_count.to_string()),
            ("messages acked", self.acked_count.to_string()),
            ("receipts", self.receives_count.to_string()),
            ("lost (acked, never received)", self.lost_count.to_string()),
            ("unknown receipts", self.unknown_count.to_string()),
            ("redeliveries (allowed)", self.redelivery_count.to_string()),
            ("true duplicates", self.duplicate_count.to_string()),
            ("FIFO violations", self.fifo_violation_count.to_string()),
        ] {
            summary.row(vec![name.to_string(), value]);
        }
        summary.render(&mut out);

        if !self.lost.is_empty() {
            out.push_str("\nLost messages\n");
            let mut table = Table::new(&["id", "origin", "consumer group", "acked at"]);
            for lost in &self.lost {
                table.row(vec![
                    lost.id.clone(),
                    lost.origin_region.clone(),
                    lost.consumer_group.clone(),
                    format!("{} ms", lost.acked_at_ms),
                ]);
            }
            table.render(&mut out);
        }
        if !self.unknown.is_empty() {
            out.push_str("\nReceipts of messages never sent\n");
            let mut table = Table::new(&["id", "region", "consumer group", "at"]);
            for unknown in &self.unknown {
                table.row(vec![
                    unknown.id.clone(),
                    unknown.region.clone(),
                    unknown.consumer_group.clone(),
                    format!("{} ms", unknown.at_ms),
                ]);
            }
            table.render(&mut out);
        }
        if !self.repeats.is_empty() {
            out.push_str("\nRepeated receipts\n");
            let mut table = Table::new(&[
                "id",
                "consumer group",
                "region",
                "attempt",
                "at",
                "first at",
                "class",
            ]);
            for repeat in &self.repeats {
                let class = match repeat.class {
                    RepeatClass::Redelivery(reason) => format!("redelivery ({reason:?})"),
                    RepeatClass::Duplicate(reason) => format!("DUPLICATE ({reason:?})"),
                };
                table.row(vec![
                    repeat.id.clone(),
                    repeat.consumer_group.clone(),
                    repeat.region.clone(),
                    repeat.attempt.to_string(),
                    format!("{} ms", repeat.at_ms),
                    format!("{} ms", repeat.first_at_ms),
                    class,
                ]);
            }
            table.render(&mut out);
        }
        if !self.fifo_violations.is_empty() {
            out.push_str("\nFIFO violations\n");
            let mut table = Table::new(&[
                "group",
                "region",
                "consumer group",
                "kind",
                "seq",
                "other seq",
                "id",
                "at",
            ]);
            for v in &self.fifo_violations {
                table.row(vec![
                    v.group.clone(),
                    v.region.clone(),
                    v.consumer_group.clone(),
                    format!("{:?}", v.kind),
                    v.seq.to_string(),
                    v.other_seq.to_string(),
                    v.id.clone(),
                    format!("{} ms", v.at_ms),
                ]);
            }
            table.render(&mut out);
        }
        if !self.rto.is_empty() {
            out.push_str("\nRecovery time (RTO) per region-down fault\n");
            let mut table = Table::new(&[
                "down",
                "fault at",
                "survivor",
                "first ack",
                "first receive",
                "producers back",
                "consumers back",
            ]);
            for rto in &self.rto {
                for survivor in &rto.survivors {
                    table.row(vec![
                        rto.region_down.clone(),
                        format!("{} ms", rto.fault_at_ms),
                        survivor.region.clone(),
                        opt_ms(survivor.first_ack_ms),
                        opt_ms(survivor.first_receive_ms),
                        format!(
                            "{} of {}",
                            opt_ms(rto.producers_recovered_ms),
                            rto.displaced_producers
                        ),
                        format!(
                            "{} of {}",
                            opt_ms(rto.consumers_recovered_ms),
                            rto.displaced_consumers
                        ),
                    ]);
                }
            }
            table.render(&mut out);
        }
        if !self.rpo.is_empty() {
            out.push_str("\nData loss (RPO) per region-down fault\n");
            let mut table = Table::new(&["down", "fault at", "missing", "window", "ids"]);
            for rpo in &self.rpo {
                let ids: Vec<&str> = rpo.missing.iter().map(|m| m.id.as_str()).collect();
                table.row(vec![
                    rpo.region_down.clone(),
                    format!("{} ms", rpo.fault_at_ms),
                    rpo.missing_count.to_string(),
                    rpo.window_ms
                        .map_or_else(|| "-".to_string(), |ms| format!("{ms} ms")),
                    ids.join(","),
                ]);
            }
            table.render(&mut out);
        }
        if !self.lag.is_empty() {
            out.push_str("\nReplication lag (first seen in target minus ack in origin)\n");
            let mut table = Table::new(&["from", "to", "window", "count", "p50", "p99", "max"]);
            for series in &self.lag {
                let rows = std::iter::once(("all".to_string(), &series.overall)).chain(
                    series
                        .windows
                        .iter()
                        .map(|w| (format!("{} ms", w.start_ms), w)),
                );
                for (label, w) in rows {
                    table.row(vec![
                        series.from.clone(),
                        series.to.clone(),
                        label,
                        w.count.to_string(),
                        format!("{} ms", w.p50_ms),
                        format!("{} ms", w.p99_ms),
                        format!("{} ms", w.max_ms),
                    ]);
                }
            }
            table.render(&mut out);
        }
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render_table())
    }
}
