//! Transaction core (sans-IO): open transactions and their check-back schedule.

mod table;

pub use table::{CheckAction, OpenTransaction, TransactionPolicy, TransactionTable};
