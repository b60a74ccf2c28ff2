//! Series files: the label sets of the store's series, compressed.
//!
//! A checkpoint that created series writes one file with them; retention
//! that deleted series writes one with their ids; maintenance rewrites all
//! of them into one when there are more than a few. Which files count is
//! recorded in the data file's `series_files` table, in the transaction of
//! the checkpoint or rewrite that made them. Label strings are stored once
//! per file (a symbol table) and the whole body is snappy-compressed, so a
//! series costs a few bytes instead of its labels' length.
//!
//! Layout: `"MLMS" version(1)`, `u32 LE body length`, snappy(body), `u32 LE
//! CRC-32 of the compressed body`. Body: `uvarint symbols, per symbol
//! uvarint len + bytes (sorted)`, `uvarint series, per series uvarint(id -
//! previous id) uvarint pairs, per pair uvarint name symbol, uvarint value
//! symbol`, `uvarint deletes, per delete uvarint(id - previous id)`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use crate::model::{get_uvarint, put_uvarint};

const MAGIC: &[u8; 4] = b"MLMS";
const VERSION: u8 = 1;

pub fn file_name(id: u64) -> String {
    format!("{id:020}.series")
}

/// The file id a name stands for, if it is a series file's name.
pub fn id_of_file(name: &str) -> Option<u64> {
    let id = name.strip_suffix(".series")?;
    (id.len() == 20).then(|| id.parse().ok())?
}

/// The (name, value) byte strings of canonical label bytes.
fn take<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(get_uvarint(b)?).ok()?;
    let s = b.get(..len)?;
    *b = &b[len..];
    Some(s)
}

/// Label pairs as byte strings.
type Pairs<'a> = Vec<(&'a [u8], &'a [u8])>;

fn pairs(mut b: &[u8]) -> Option<Pairs<'_>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let n = take(&mut b)?;
        let v = take(&mut b)?;
        out.push((n, v));
    }
    Some(out)
}

/// What one file holds: series added (id, canonical label bytes) and ids
/// deleted.
#[derive(Debug, Default, PartialEq)]
pub struct Contents {
    pub adds: Vec<(u64, Vec<u8>)>,
    pub deletes: Vec<u64>,
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

/// Writes file `id` in `dir` durably (temporary name, sync, rename, sync
/// the directory). `adds` and `deletes` need not be sorted. Returns its
/// size.
pub fn write(dir: &Path, id: u64, adds: &[(u64, Vec<u8>)], deletes: &[u64]) -> io::Result<u64> {
    let mut adds: Vec<(u64, Pairs)> = adds
        .iter()
        .map(|(id, b)| Ok((*id, pairs(b).ok_or_else(|| invalid("bad label bytes"))?)))
        .collect::<io::Result<_>>()?;
    adds.sort_by_key(|a| a.0);
    let mut deletes = deletes.to_vec();
    deletes.sort_unstable();
    let mut symbols: BTreeMap<&[u8], u64> = BTreeMap::new();
    for (_, ps) in &adds {
        for (n, v) in ps {
            symbols.insert(n, 0);
            symbols.insert(v, 0);
        }
    }
    let mut body = Vec::new();
    put_uvarint(&mut body, symbols.len() as u64);
    for (i, (s, n)) in symbols.iter_mut().enumerate() {
        put_uvarint(&mut body, s.len() as u64);
        body.extend_from_slice(s);
        *n = i as u64;
    }
    put_uvarint(&mut body, adds.len() as u64);
    let mut prev = 0;
    for (id, ps) in &adds {
        put_uvarint(&mut body, id - prev);
        prev = *id;
        put_uvarint(&mut body, ps.len() as u64);
        for (n, v) in ps {
            put_uvarint(&mut body, symbols[n]);
            put_uvarint(&mut body, symbols[v]);
        }
    }
    put_uvarint(&mut body, deletes.len() as u64);
    let mut prev = 0;
    for id in &deletes {
        put_uvarint(&mut body, id - prev);
        prev = *id;
    }
    let packed = snap::raw::Encoder::new()
        .compress_vec(&body)
        .map_err(|e| invalid(&e.to_string()))?;
    let len = u32::try_from(packed.len()).map_err(|_| invalid("series file over 4 GiB"))?;
    let mut out = Vec::with_capacity(packed.len() + 13);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&packed);
    out.extend_from_slice(&crc32fast::hash(&packed).to_le_bytes());
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{}.tmp", file_name(id)));
    let mut f = File::create(&tmp)?;
    f.write_all(&out)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(file_name(id)))?;
    File::open(dir)?.sync_all()?;
    Ok(out.len() as u64)
}

/// Reads file `id` from `dir`.
pub fn read(dir: &Path, id: u64) -> io::Result<Contents> {
    let path = dir.join(file_name(id));
    let data = fs::read(&path)?;
    let bad = |why: &str| invalid(&format!("series file {}: {why}", path.display()));
    if data.len() < 13 || &data[..4] != MAGIC || data[4] != VERSION {
        return Err(bad("not a series file of version 1"));
    }
    let len = u32::from_le_bytes(data[5..9].try_into().expect("4 bytes")) as usize;
    let packed = data.get(9..9 + len).ok_or_else(|| bad("truncated"))?;
    let crc = data
        .get(9 + len..13 + len)
        .ok_or_else(|| bad("truncated"))?;
    if crc32fast::hash(packed).to_le_bytes() != crc {
        return Err(bad("checksum mismatch"));
    }
    let body = snap::raw::Decoder::new()
        .decompress_vec(packed)
        .map_err(|e| bad(&e.to_string()))?;
    decode_body(&body).ok_or_else(|| bad("malformed body"))
}

fn decode_body(mut b: &[u8]) -> Option<Contents> {
    let n = usize::try_from(get_uvarint(&mut b)?).ok()?;
    let mut symbols: Vec<&[u8]> = Vec::with_capacity(n.min(b.len()));
    for _ in 0..n {
        let len = usize::try_from(get_uvarint(&mut b)?).ok()?;
        symbols.push(b.get(..len)?);
        b = &b[len..];
    }
    let mut out = Contents::default();
    let n = get_uvarint(&mut b)?;
    let mut id = 0u64;
    for _ in 0..n {
        id = id.checked_add(get_uvarint(&mut b)?)?;
        let pairs = get_uvarint(&mut b)?;
        let mut labels = Vec::new();
        for _ in 0..pairs * 2 {
            let s = symbols.get(usize::try_from(get_uvarint(&mut b)?).ok()?)?;
            put_uvarint(&mut labels, s.len() as u64);
            labels.extend_from_slice(s);
        }
        out.adds.push((id, labels));
    }
    let n = get_uvarint(&mut b)?;
    let mut id = 0u64;
    for _ in 0..n {
        id = id.checked_add(get_uvarint(&mut b)?)?;
        out.deletes.push(id);
    }
    b.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Labels;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let a = Labels::new([("__name__", "up"), ("job", "node")]).unwrap();
        let b = Labels::new([("__name__", "up"), ("job", "api"), ("x", "é")]).unwrap();
        let adds = vec![(9, b.encode()), (2, a.encode())];
        let n = write(dir.path(), 1, &adds, &[7, 3]).unwrap();
        assert!(n > 0);
        let got = read(dir.path(), 1).unwrap();
        assert_eq!(got.adds, [(2, a.encode()), (9, b.encode())]);
        assert_eq!(got.deletes, [3, 7]);
        assert_eq!(id_of_file(&file_name(1)), Some(1));
        let path = dir.path().join(file_name(1));
        let mut data = fs::read(&path).unwrap();
        data[12] ^= 1;
        fs::write(&path, data).unwrap();
        assert!(read(dir.path(), 1).is_err());
    }
}
