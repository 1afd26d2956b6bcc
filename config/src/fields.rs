//! `deserialize_with` helpers for fields with constraints beyond their type.

use std::net::SocketAddr;

use serde::de::{Deserializer, Error, Unexpected};
use serde::Deserialize;

/// What an admin `listen` address must look like.
const SOCKET_ADDR: &str = "a socket address like \"127.0.0.1:9898\"";

/// A `usize` of at least 1.
pub(crate) fn positive_usize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<usize, D::Error> {
    let value = usize::deserialize(deserializer)?;
    if value == 0 {
        return Err(D::Error::invalid_value(
            Unexpected::Unsigned(0),
            &"at least 1",
        ));
    }
    Ok(value)
}

/// A `u32` of at least 1.
pub(crate) fn positive_u32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = u32::deserialize(deserializer)?;
    if value == 0 {
        return Err(D::Error::invalid_value(
            Unexpected::Unsigned(0),
            &"at least 1",
        ));
    }
    Ok(value)
}

/// The optional shard count: present means at least 1.
pub(crate) fn shard_count<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<usize>, D::Error> {
    let value = usize::deserialize(deserializer)?;
    if value == 0 {
        return Err(D::Error::invalid_value(
            Unexpected::Unsigned(0),
            &"at least 1 (leave `shards` out to use one shard per core)",
        ));
    }
    Ok(Some(value))
}

/// An optional address that must parse as a [`SocketAddr`]; kept as text.
pub(crate) fn socket_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let value = String::deserialize(deserializer)?;
    if value.parse::<SocketAddr>().is_err() {
        return Err(D::Error::invalid_value(
            Unexpected::Str(&value),
            &SOCKET_ADDR,
        ));
    }
    Ok(Some(value))
}
