//! Errors of the wire helpers in this crate.

/// Failure of one of the crate's decoding or parsing helpers.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// A status code number that is not a value of `apache.rocketmq.v2.Code`.
    #[error("status code {value} is not a value of apache.rocketmq.v2.Code")]
    UnknownCode {
        /// The number as found on the wire.
        value: i32,
        /// prost's own report of the unknown value.
        #[source]
        source: prost::UnknownEnumValue,
    },

    /// The descriptor set embedded at build time does not decode (a build defect).
    #[error("embedded file descriptor set does not decode")]
    Descriptor(#[from] prost::DecodeError),

    /// An `authorization` header that does not follow the `MQv2-HMAC-SHA1` format.
    #[error("malformed authorization header: {reason}")]
    MalformedAuthorization {
        /// Which rule of the format was violated.
        reason: &'static str,
    },
}
