//! Parts: immutable files of closed chunks, the store's long-term data.
//!
//! A checkpoint writes the chunks it closed as one part per day they start
//! in; maintenance merges the parts of a day into bigger ones and re-encodes
//! each series' chunks into blocks of up to [`BLOCK_SAMPLES`] samples. The
//! bytes on disk are the chunks' bytes plus a small index: no pages to fill,
//! nothing rewritten in place. Which parts exist is recorded in the data
//! file's `parts` table, in the same transaction as the checkpoint or merge
//! that made them; files it does not list are leftovers of a crash.
//!
//! File layout (integers LE; `docs/format.md` has the picture):
//! `"MLMP" version(1)`, then per series (ascending id) a section
//! `uvarint n, n × uvarint len, the n chunks`, then the index `uvarint
//! count, per series uvarint(id - previous id) uvarint(section length)
//! varint(min_t) uvarint(max_t - min_t) uvarint(samples) uvarint(chunks)`,
//! then the footer
//! `u64 index offset, u32 CRC-32 of the index, "MLMP"`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::chunk;
use crate::model::{get_uvarint, get_varint, put_uvarint, put_varint, Sample, Timestamp};

const MAGIC: &[u8; 4] = b"MLMP";
const VERSION: u8 = 1;
const HEADER_BYTES: u64 = 5;
const FOOTER_BYTES: usize = 16;

/// Merged blocks hold at most this many samples (about 17 h at 15 s), so a
/// read decodes little it does not need.
pub const BLOCK_SAMPLES: usize = 4096;

/// Parts are partitioned by the day a chunk starts in: merges stay within a
/// day and retention drops whole days.
pub const DAY_MS: i64 = 86_400_000;

pub fn day_of(t: Timestamp) -> i64 {
    t.div_euclid(DAY_MS)
}

/// One series' place in a part.
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u64,
    offset: u64,
    len: u32,
    min_t: Timestamp,
    max_t: Timestamp,
    samples: u32,
    chunks: u32,
}

/// An open part: its index in memory, its chunks read on demand.
#[derive(Debug)]
pub struct Part {
    pub id: u64,
    pub day: i64,
    path: PathBuf,
    file: File,
    entries: Vec<Entry>,
    pub min_t: Timestamp,
    pub max_t: Timestamp,
    pub bytes: u64,
    pub samples: u64,
    pub chunks: u64,
}

fn corrupt(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("part {}: {why}", path.display()),
    )
}

pub fn file_name(id: u64) -> String {
    format!("{id:020}.part")
}

/// The part id a file name stands for, if it is a part's name.
pub fn id_of_file(name: &str) -> Option<u64> {
    let id = name.strip_suffix(".part")?;
    (id.len() == 20).then(|| id.parse().ok())?
}

impl Part {
    /// Opens a part file and reads its index.
    pub fn open(dir: &Path, id: u64, day: i64) -> io::Result<Part> {
        let path = dir.join(file_name(id));
        let file = File::open(&path)?;
        let bytes = file.metadata()?.len();
        if bytes < HEADER_BYTES + FOOTER_BYTES as u64 {
            return Err(corrupt(&path, "too short"));
        }
        let mut footer = [0u8; FOOTER_BYTES];
        file.read_exact_at(&mut footer, bytes - FOOTER_BYTES as u64)?;
        if &footer[12..16] != MAGIC {
            return Err(corrupt(&path, "no part footer"));
        }
        let index_at = u64::from_le_bytes(footer[0..8].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(footer[8..12].try_into().expect("4 bytes"));
        let index_len = (bytes - FOOTER_BYTES as u64)
            .checked_sub(index_at)
            .filter(|_| index_at >= HEADER_BYTES)
            .ok_or_else(|| corrupt(&path, "index offset out of range"))?;
        let mut index = vec![0u8; index_len as usize];
        file.read_exact_at(&mut index, index_at)?;
        if crc32fast::hash(&index) != crc {
            return Err(corrupt(&path, "index checksum mismatch"));
        }
        let entries = decode_index(&index, index_at).ok_or_else(|| corrupt(&path, "bad index"))?;
        let min_t = entries.iter().map(|e| e.min_t).min().unwrap_or(0);
        let max_t = entries.iter().map(|e| e.max_t).max().unwrap_or(0);
        let samples = entries.iter().map(|e| u64::from(e.samples)).sum();
        let chunks = entries.iter().map(|e| u64::from(e.chunks)).sum();
        Ok(Part {
            id,
            day,
            path,
            file,
            entries,
            min_t,
            max_t,
            bytes,
            samples,
            chunks,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn entry(&self, id: u64) -> Option<&Entry> {
        self.entries
            .binary_search_by_key(&id, |e| e.id)
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Series `id`'s section if its time range meets `[mint, maxt]`.
    fn entry_within(&self, id: u64, mint: Timestamp, maxt: Timestamp) -> Option<&Entry> {
        self.entry(id)
            .filter(|e| e.max_t >= mint && e.min_t <= maxt)
    }

    /// True when the part holds samples of series `id` in `[mint, maxt]`
    /// (by the section's time range, without reading it).
    pub fn overlaps(&self, id: u64, mint: Timestamp, maxt: Timestamp) -> bool {
        self.entry_within(id, mint, maxt).is_some()
    }

    /// How many samples the part holds for series `id` if its section
    /// overlaps `[mint, maxt]` (all of them, also those outside), else 0.
    pub fn samples_of(&self, id: u64, mint: Timestamp, maxt: Timestamp) -> usize {
        self.entry_within(id, mint, maxt)
            .map_or(0, |e| e.samples as usize)
    }

    /// Series ids in the part, ascending.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.iter().map(|e| e.id)
    }

    /// The encoded chunks of series `id`, oldest first (empty if none).
    pub fn chunks(&self, id: u64) -> io::Result<Vec<Vec<u8>>> {
        let Some(e) = self.entry(id) else {
            return Ok(Vec::new());
        };
        let buf = self.section(e)?;
        let chunks = split_section(&buf).ok_or_else(|| corrupt(&self.path, "bad section"))?;
        Ok(chunks.into_iter().map(<[u8]>::to_vec).collect())
    }

    fn section(&self, e: &Entry) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; e.len as usize];
        self.file.read_exact_at(&mut buf, e.offset)?;
        Ok(buf)
    }

    /// Appends the samples of series `id` in `[mint, maxt]` to `out`.
    pub fn read(
        &self,
        id: u64,
        mint: Timestamp,
        maxt: Timestamp,
        out: &mut Vec<Sample>,
    ) -> io::Result<()> {
        let Some(e) = self.entry_within(id, mint, maxt) else {
            return Ok(());
        };
        let buf = self.section(e)?;
        let chunks = split_section(&buf).ok_or_else(|| corrupt(&self.path, "bad section"))?;
        for c in chunks {
            let m = chunk::meta(c).map_err(|e| corrupt(&self.path, &e.to_string()))?;
            if m.max_t < mint || m.min_t > maxt {
                continue;
            }
            let from = out.len();
            chunk::decode_into(c, out).map_err(|e| corrupt(&self.path, &e.to_string()))?;
            if m.min_t < mint || m.max_t > maxt {
                let lo = from + out[from..].partition_point(|s| s.t < mint);
                let hi = from + out[from..].partition_point(|s| s.t <= maxt);
                out.truncate(hi);
                out.drain(from..lo);
            }
        }
        Ok(())
    }
}

fn decode_index(mut b: &[u8], data_end: u64) -> Option<Vec<Entry>> {
    let count = usize::try_from(get_uvarint(&mut b)?).ok()?;
    let mut entries = Vec::with_capacity(count.min(b.len()));
    let (mut id, mut offset) = (0u64, HEADER_BYTES);
    for i in 0..count {
        let delta = get_uvarint(&mut b)?;
        if i > 0 && delta == 0 {
            return None;
        }
        id = id.checked_add(delta)?;
        let len = u32::try_from(get_uvarint(&mut b)?).ok()?;
        let min_t = get_varint(&mut b)?;
        let max_t = min_t.checked_add(i64::try_from(get_uvarint(&mut b)?).ok()?)?;
        let samples = u32::try_from(get_uvarint(&mut b)?).ok()?;
        let chunks = u32::try_from(get_uvarint(&mut b)?).ok()?;
        entries.push(Entry {
            id,
            offset,
            len,
            min_t,
            max_t,
            samples,
            chunks,
        });
        offset = offset.checked_add(u64::from(len))?;
    }
    (b.is_empty() && offset <= data_end).then_some(entries)
}

fn split_section(mut b: &[u8]) -> Option<Vec<&[u8]>> {
    let n = usize::try_from(get_uvarint(&mut b)?).ok()?;
    let mut lens = Vec::with_capacity(n.min(b.len()));
    for _ in 0..n {
        lens.push(usize::try_from(get_uvarint(&mut b)?).ok()?);
    }
    let mut out = Vec::with_capacity(lens.len());
    for len in lens {
        out.push(b.get(..len)?);
        b = &b[len..];
    }
    b.is_empty().then_some(out)
}

/// Writes a part: sections are added in ascending series id order, then
/// [`Writer::finish`] makes the file durable under its final name.
pub struct Writer {
    dir: PathBuf,
    id: u64,
    tmp: PathBuf,
    out: BufWriter<File>,
    offset: u64,
    index: Vec<u8>,
    count: u64,
    last_id: Option<u64>,
    section: Vec<u8>,
}

impl Writer {
    pub fn create(dir: &Path, id: u64) -> io::Result<Writer> {
        fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("{}.tmp", file_name(id)));
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&tmp)?;
        let mut out = BufWriter::with_capacity(1 << 16, file);
        out.write_all(MAGIC)?;
        out.write_all(&[VERSION])?;
        Ok(Writer {
            dir: dir.to_path_buf(),
            id,
            tmp,
            out,
            offset: HEADER_BYTES,
            index: Vec::new(),
            count: 0,
            last_id: None,
            section: Vec::new(),
        })
    }

    /// Adds series `id`'s chunks (oldest first, at least one).
    pub fn add(&mut self, id: u64, chunks: &[Vec<u8>]) -> io::Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        debug_assert!(self.last_id.is_none_or(|l| l < id));
        let (mut min_t, mut max_t, mut samples) = (i64::MAX, i64::MIN, 0u64);
        for c in chunks {
            let m = chunk::meta(c)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            min_t = min_t.min(m.min_t);
            max_t = max_t.max(m.max_t);
            samples += m.count as u64;
        }
        self.section.clear();
        put_uvarint(&mut self.section, chunks.len() as u64);
        for c in chunks {
            put_uvarint(&mut self.section, c.len() as u64);
        }
        let len = self.section.len() + chunks.iter().map(Vec::len).sum::<usize>();
        let len32 = u32::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "section over 4 GiB"))?;
        self.out.write_all(&self.section)?;
        for c in chunks {
            self.out.write_all(c)?;
        }
        put_uvarint(&mut self.index, id - self.last_id.unwrap_or(0));
        put_uvarint(&mut self.index, u64::from(len32));
        put_varint(&mut self.index, min_t);
        put_uvarint(&mut self.index, (max_t - min_t) as u64);
        put_uvarint(&mut self.index, samples.min(u64::from(u32::MAX)));
        put_uvarint(&mut self.index, chunks.len() as u64);
        self.offset += len as u64;
        self.count += 1;
        self.last_id = Some(id);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Drops the unfinished part and deletes its temporary file.
    pub fn abandon(self) {
        let tmp = self.tmp.clone();
        drop(self);
        let _ = fs::remove_file(tmp);
    }

    /// Writes the index and footer, syncs, renames the file into place and
    /// syncs the directory; then opens it.
    pub fn finish(mut self, day: i64) -> io::Result<Part> {
        let mut index = Vec::with_capacity(self.index.len() + 10);
        put_uvarint(&mut index, self.count);
        index.extend_from_slice(&self.index);
        self.out.write_all(&index)?;
        self.out.write_all(&self.offset.to_le_bytes())?;
        self.out.write_all(&crc32fast::hash(&index).to_le_bytes())?;
        self.out.write_all(MAGIC)?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&self.tmp, self.dir.join(file_name(self.id)))?;
        File::open(&self.dir)?.sync_all()?;
        Part::open(&self.dir, self.id, day)
    }
}

/// Re-encodes consecutive chunks of one series into blocks of up to
/// [`BLOCK_SAMPLES`] samples, dropping samples older than `cutoff`. Chunks
/// already at the block size are kept as they are.
pub fn reblock(chunks: Vec<Vec<u8>>, cutoff: Timestamp) -> Result<Vec<Vec<u8>>, chunk::ChunkError> {
    let mut out = Vec::new();
    let mut run: Vec<Sample> = Vec::new();
    let flush = |run: &mut Vec<Sample>, out: &mut Vec<Vec<u8>>| {
        for part in run.chunks(BLOCK_SAMPLES) {
            out.push(chunk::encode(part));
        }
        run.clear();
    };
    for c in chunks {
        let m = chunk::meta(&c)?;
        if m.max_t < cutoff {
            continue;
        }
        if m.count >= BLOCK_SAMPLES && m.min_t >= cutoff {
            flush(&mut run, &mut out);
            out.push(c);
            continue;
        }
        let from = run.len();
        chunk::decode_into(&c, &mut run)?;
        if m.min_t < cutoff {
            let keep = from + run[from..].partition_point(|s| s.t < cutoff);
            run.drain(from..keep);
        }
    }
    // Full blocks first, the rest in one.
    flush(&mut run, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(from: i64, n: i64) -> Vec<Sample> {
        (from..from + n)
            .map(|i| Sample {
                t: i * 15_000,
                v: (i % 7) as f64,
            })
            .collect()
    }

    #[test]
    fn write_open_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::create(dir.path(), 3).unwrap();
        w.add(
            1,
            &[
                chunk::encode(&samples(0, 100)),
                chunk::encode(&samples(100, 50)),
            ],
        )
        .unwrap();
        w.add(9, &[chunk::encode(&samples(10, 5))]).unwrap();
        let p = w.finish(0).unwrap();
        let p2 = Part::open(dir.path(), 3, 0).unwrap();
        assert_eq!(p.bytes, p2.bytes);
        assert_eq!(p2.samples, 155);
        assert_eq!(p2.ids().collect::<Vec<_>>(), [1, 9]);
        let mut out = Vec::new();
        p2.read(1, 99 * 15_000, 101 * 15_000, &mut out).unwrap();
        assert_eq!(out, samples(99, 3));
        out.clear();
        p2.read(9, 0, i64::MAX, &mut out).unwrap();
        assert_eq!(out, samples(10, 5));
        assert!(!p2.overlaps(9, 20 * 15_000, i64::MAX));
        assert!(!p2.overlaps(5, 0, i64::MAX));
        assert_eq!(id_of_file(&file_name(3)), Some(3));
        // A flipped index byte is caught.
        let path = p2.path().to_path_buf();
        let mut data = fs::read(&path).unwrap();
        let n = data.len();
        data[n - FOOTER_BYTES - 2] ^= 1;
        fs::write(&path, data).unwrap();
        assert!(Part::open(dir.path(), 3, 0).is_err());
    }

    #[test]
    fn reblock_merges_and_cuts() {
        let chunks: Vec<Vec<u8>> = (0..20)
            .map(|k| chunk::encode(&samples(k * 240, 240)))
            .collect();
        let blocks = reblock(chunks, 100 * 15_000).unwrap();
        let mut all = Vec::new();
        for b in &blocks {
            chunk::decode_into(b, &mut all).unwrap();
        }
        assert_eq!(all, samples(100, 4700));
        assert_eq!(blocks.len(), 2);
    }
}
