//! Per-message (pop) consumption core: in-flight state per (group, topic, queue) and receipt
//! handles. Sans-IO; the broker persists and drives it.

mod handle;
mod queue;

pub use handle::{MAX_RECEIPT_HANDLE_BYTES, ReceiptHandle};
pub use queue::{Delivery, Entry, EntryState, PopQueue, RemoteMark};
