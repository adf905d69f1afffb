//! The commit journal: how the store makes a write that spans several trees atomic and
//! durable with a single sled insert and a single flush.
//!
//! sled 0.34's multi-tree transactions (and `apply_batch`) roll the log's I/O buffer twice per
//! commit, so one publish turned into three log writes on sled's I/O threads before the
//! flush; measured on the publish benchmark, that alone put the store's p99 at 1.3-2.8x a
//! bare insert + flush. A commit here instead:
//!
//! 1. writes every change of the mutation, together with those of earlier commits that may
//!    not be on disk yet, as the value of one key of the `journal` tree (one insert is atomic);
//! 2. flushes: from here on the mutation survives a crash;
//! 3. applies the changes to the trees with plain inserts and removes (not yet flushed).
//!
//! An entry leaves the journal once a flush that started after its changes were applied has
//! completed. When the store opens it applies whatever the journal holds, oldest first, so
//! after a crash the trees end up as if every journalled commit had been applied in order.
//! This needs nothing of sled beyond "one insert is atomic" and "a completed flush makes every
//! earlier write durable".
//!
//! Encoding (all integers little-endian): `SJ1`, then per entry a `u32` byte length and the
//! entry: a `u32` count of writes, then per write the tree (`u8`), the operation (`u8`: 1
//! insert, 0 remove), a `u32` key length, the key and, for an insert, a `u32` value length
//! and the value.

use crate::error::Error;

/// The trees a commit can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TreeId {
    Profiles = 0,
    Versions = 1,
    Content = 2,
    Digests = 3,
    Audit = 4,
}

impl TreeId {
    fn from_u8(b: u8) -> Option<TreeId> {
        Some(match b {
            0 => TreeId::Profiles,
            1 => TreeId::Versions,
            2 => TreeId::Content,
            3 => TreeId::Digests,
            4 => TreeId::Audit,
            _ => return None,
        })
    }
}

/// One change of a commit: an insert (`value` set) or a remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Write {
    pub tree: TreeId,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

impl Write {
    pub fn insert(tree: TreeId, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Write {
        Write {
            tree,
            key: key.into(),
            value: Some(value.into()),
        }
    }

    pub fn remove(tree: TreeId, key: impl Into<Vec<u8>>) -> Write {
        Write {
            tree,
            key: key.into(),
            value: None,
        }
    }
}

const MAGIC: &[u8] = b"SJ1";

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), Error> {
    // Keys and values are far below 4 GiB (profile size limit, gRPC message size), so this
    // only refuses what would otherwise be journalled wrong.
    let len = u32::try_from(len).map_err(|_| Error::Corrupt {
        key: "journal/commits".into(),
        reason: format!("cannot journal a write of {len} bytes"),
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    Ok(())
}

/// One commit's writes, encoded as a journal entry (without its length prefix).
pub(crate) fn encode_entry(writes: &[Write]) -> Result<Vec<u8>, Error> {
    let size: usize = writes
        .iter()
        .map(|w| 10 + w.key.len() + w.value.as_ref().map_or(0, Vec::len))
        .sum();
    let mut out = Vec::with_capacity(4 + size);
    put_len(&mut out, writes.len())?;
    for w in writes {
        out.push(w.tree as u8);
        out.push(u8::from(w.value.is_some()));
        put_len(&mut out, w.key.len())?;
        out.extend_from_slice(&w.key);
        if let Some(value) = &w.value {
            put_len(&mut out, value.len())?;
            out.extend_from_slice(value);
        }
    }
    Ok(out)
}

/// The journal's value holding these encoded entries, oldest first.
pub(crate) fn encode<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<u8>, Error> {
    let mut out = MAGIC.to_vec();
    for entry in entries {
        append(&mut out, entry)?;
    }
    Ok(out)
}

/// Add one encoded entry to a journal value.
pub(crate) fn append(journal: &mut Vec<u8>, entry: &[u8]) -> Result<(), Error> {
    put_len(journal, entry.len())?;
    journal.extend_from_slice(entry);
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| format!("truncated {what} at byte {}", self.pos))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn len(&mut self, what: &str) -> Result<usize, String> {
        let b = self.take(4, what)?;
        let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        usize::try_from(n).map_err(|_| format!("{what} too large"))
    }

    fn byte(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn done(&self) -> bool {
        self.pos == self.bytes.len()
    }
}

fn decode_entry(bytes: &[u8]) -> Result<Vec<Write>, String> {
    let mut r = Reader { bytes, pos: 0 };
    let count = r.len("write count")?;
    // Every write takes at least 6 bytes, so a count beyond that is corruption, not a
    // reason to allocate.
    if count > bytes.len() / 6 {
        return Err(format!("write count {count} exceeds the entry's size"));
    }
    let mut writes = Vec::with_capacity(count);
    for _ in 0..count {
        let tree = r.byte("tree")?;
        let tree = TreeId::from_u8(tree).ok_or_else(|| format!("unknown tree {tree}"))?;
        let op = r.byte("operation")?;
        let klen = r.len("key length")?;
        let key = r.take(klen, "key")?.to_vec();
        let value = match op {
            0 => None,
            1 => {
                let vlen = r.len("value length")?;
                Some(r.take(vlen, "value")?.to_vec())
            }
            other => return Err(format!("unknown operation {other}")),
        };
        writes.push(Write { tree, key, value });
    }
    if !r.done() {
        return Err("trailing bytes after the last write".into());
    }
    Ok(writes)
}

/// The entries of a journal value, oldest first.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<Vec<Write>>, String> {
    let rest = bytes.strip_prefix(MAGIC).ok_or("missing the SJ1 header")?;
    let mut r = Reader {
        bytes: rest,
        pos: 0,
    };
    let mut entries = Vec::new();
    while !r.done() {
        let len = r.len("entry length")?;
        let entry = r.take(len, "entry")?;
        entries.push(decode_entry(entry)?);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> Vec<Write> {
        vec![
            Write::insert(TreeId::Profiles, b"p".to_vec(), b"{}".to_vec()),
            Write::insert(TreeId::Content, b"p\0\0".to_vec(), vec![0u8; 300]),
            Write::insert(TreeId::Digests, b"d".to_vec(), Vec::new()),
            Write::remove(TreeId::Versions, b"v".to_vec()),
            Write::insert(TreeId::Audit, Vec::new(), b"a".to_vec()),
        ]
    }

    #[test]
    fn round_trip_keeps_order_and_removes() {
        let a = sample();
        let b = vec![Write::remove(TreeId::Content, b"x".to_vec())];
        let (ea, eb) = (encode_entry(&a).unwrap(), encode_entry(&b).unwrap());
        let journal = encode([ea.as_slice(), eb.as_slice()]).unwrap();
        let entries = decode(&journal).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries, [a, b]);
        assert!(decode(&encode([]).unwrap()).unwrap().is_empty());
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error() {
        let journal = encode([encode_entry(&sample()).unwrap().as_slice()]).unwrap();
        for cut in 0..journal.len() {
            // Right after the header is a journal with no entries, which is valid.
            if cut != MAGIC.len() {
                assert!(decode(&journal[..cut]).is_err(), "cut at {cut}");
            }
        }
        let mut bad_tree = journal.clone();
        bad_tree[MAGIC.len() + 8] = 9;
        assert!(decode(&bad_tree).unwrap_err().contains("unknown tree 9"));
        let mut bad_op = journal.clone();
        bad_op[MAGIC.len() + 9] = 7;
        assert!(decode(&bad_op).unwrap_err().contains("unknown operation 7"));
        let mut huge_count = journal;
        huge_count[MAGIC.len() + 4..MAGIC.len() + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge_count).is_err());
    }
}
