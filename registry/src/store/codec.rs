//! How values are stored: records as JSON, content LZ4-compressed behind a tag byte (see
//! [`super`]); a value that does not decode is [`Error::Corrupt`], naming its key.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

pub(super) fn decode<T: DeserializeOwned>(what: &dyn Fn() -> String, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        key: what(),
        reason: e.to_string(),
    })
}

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Corrupt {
        key: "(encoding)".to_owned(),
        reason: e.to_string(),
    })
}

/// Tag of compressed content: an LZ4 block with its uncompressed size (`u32`, little-endian)
/// in front. Raw JSON cannot start with this byte.
pub(super) const PACKED_LZ4: u8 = 1;

/// Compressed content claiming more than this is corrupt (the gRPC message limit keeps real
/// profiles far below it), not a reason to allocate.
const MAX_UNPACKED: usize = 256 << 20;

pub(super) fn pack(content: &[u8]) -> Vec<u8> {
    let compressed = lz4_flex::block::compress_prepend_size(content);
    let mut out = Vec::with_capacity(1 + compressed.len());
    out.push(PACKED_LZ4);
    out.extend_from_slice(&compressed);
    out
}

pub(super) fn unpack(what: &dyn Fn() -> String, stored: &[u8]) -> Result<Vec<u8>> {
    let Some((&PACKED_LZ4, packed)) = stored.split_first() else {
        // Stored before content was compressed: the bytes as published.
        return Ok(stored.to_vec());
    };
    let corrupt = |reason: String| Error::Corrupt {
        key: what(),
        reason,
    };
    let (size, block) = packed
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("compressed content without its size".into()))?;
    let size = u32::from_le_bytes(*size) as usize;
    if size > MAX_UNPACKED {
        return Err(corrupt(format!("compressed content claims {size} bytes")));
    }
    let bytes = lz4_flex::block::decompress(block, size)
        .map_err(|e| corrupt(format!("cannot decompress: {e}")))?;
    if bytes.len() != size {
        return Err(corrupt(format!(
            "decompressed to {} bytes, expected {size}",
            bytes.len()
        )));
    }
    Ok(bytes)
}
