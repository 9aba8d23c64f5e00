//! The router's errors.

/// What can go wrong in the router's decisions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    /// A switchover step came in the wrong phase.
    #[error("switchover of {topic}: {detail}")]
    Switchover {
        /// The topic.
        topic: String,
        /// What was wrong.
        detail: String,
    },
}
