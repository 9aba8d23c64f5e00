//! Delay-message timers core (sans-IO); the broker stores the messages and releases them.

mod wheel;

pub use wheel::TimerWheel;
