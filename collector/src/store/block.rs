//! Immutable on-disk blocks: what leaves the head once it is older than the head window,
//! so memory holds hours and the disk holds the retention.
//!
//! A block is a folder `blocks/<start>-<end>-<nonce>/` of three files:
//! - `chunks`: each series' samples as compressed column segments (see `segment`: about
//!   a third of the head's Gorilla chunks for the same samples), series after series, in
//!   time order (so one positioned read fetches a series' segments for a time range);
//! - `index`: a labels section (per series: reference, newest timestamp, labels), a
//!   chunk-meta section (per series: its segments' bounds, offset, length, count and
//!   CRC32, ended by the entry's own CRC32), a table (reference → meta entry) and a footer
//!   (section offsets, series count, CRC32 of the labels section and the table);
//! - `meta.json`: the aligned range the block covers, its bounds and counts, and the
//!   blocks it replaces (a compaction's inputs).
//!
//! Series are keyed by the head's series reference (references are stable across
//! restarts); the labels are stored as well, so opening a block checks that the head
//! agrees, and brings back a series the head lost. Only the reference table lives in
//! memory (16 bytes per series per block); chunk metas and chunk bytes are read with
//! `pread` (`FileExt::read_at`) when a query needs them, so the page cache, not the heap,
//! holds the retention.
//!
//! A block is written to `<name>.tmp`, every file fsynced, renamed into place and the
//! folder fsynced: a crash leaves a whole block or a `.tmp` folder, which opening removes.
//! Deleting renames to `<name>.deleting` first, for the same reason.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::SeriesRef;

/// A block's name ends so while it is being written, and so while it is being deleted.
const TMP: &str = ".tmp";
const DELETING: &str = ".deleting";
const MAGIC: &[u8; 8] = b"HALEIDX1";
const FOOTER: usize = 32;
const CHUNK_META: usize = 34;
/// Labels a series may have in a block, and bytes a label may have: larger is corrupt.
const MAX_LABELS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("block I/O in {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("block {path} is damaged: {what}")]
    Corrupt { path: PathBuf, what: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlockError + '_ {
    move |source| BlockError::Io { path: path.to_path_buf(), source }
}

/// What `meta.json` says about a block.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub version: u32,
    /// The aligned range `[start, end)` the block covers, by its chunks' newest samples.
    pub range: (i64, i64),
    pub min_t: i64,
    pub max_t: i64,
    pub series: u64,
    pub chunks: u64,
    pub samples: u64,
    /// The blocks this one replaces: a compaction's inputs. Opening deletes any of them
    /// still there (a crash between writing this block and deleting them).
    #[serde(default)]
    pub sources: Vec<String>,
}

/// One of the head's chunks of a series, to write: its encoded bytes and bounds.
#[derive(Debug, Clone)]
pub struct ChunkData {
    pub bytes: Vec<u8>,
    pub count: u16,
    pub min_t: i64,
    pub max_t: i64,
}

/// One series of a block being written: its reference, labels, and samples as the head's
/// chunks and/or decoded (a compaction's). A timestamp given twice is stored once.
pub struct SeriesData {
    pub r: SeriesRef,
    pub labels: Vec<(String, String)>,
    pub chunks: Vec<ChunkData>,
    pub samples: Vec<(i64, f64)>,
}

impl SeriesData {
    /// Every sample, in time order, each timestamp once.
    fn all_samples(&self) -> Vec<(i64, f64)> {
        let mut out =
            Vec::with_capacity(self.samples.len() + self.chunks.iter().map(|c| usize::from(c.count)).sum::<usize>());
        for c in &self.chunks {
            out.extend(super::chunk::iter_encoded(&c.bytes, c.count));
        }
        out.extend_from_slice(&self.samples);
        if !out.is_sorted_by(|a, b| a.0 < b.0) {
            out.sort_by_key(|s| s.0);
            out.dedup_by_key(|s| s.0);
        }
        out
    }
}

/// Where a segment lies in the `chunks` file, and its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    pub min_t: i64,
    pub max_t: i64,
    offset: u64,
    len: u32,
    count: u16,
    crc: u32,
}

/// An open block: its meta, the reference table, and the two files read with `pread`.
pub struct Block {
    name: String,
    dir: PathBuf,
    meta: Meta,
    /// Head references, ascending, with the offset and length of each one's meta entry.
    refs: Box<[SeriesRef]>,
    entries: Box<[(u64, u32)]>,
    index: File,
    chunks: File,
    bytes: u64,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block").field("name", &self.name).field("meta", &self.meta).finish()
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (a, b) = self.bytes.split_at(n);
        self.bytes = b;
        Some(a)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
    }
    fn str(&mut self) -> Option<String> {
        let n = usize::from(self.u16()?);
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Label names and values are far below 64 KiB (ingest refuses longer ones); a longer
    // one is cut at a character boundary rather than written with a wrong length.
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn sync_dir(dir: &Path) -> Result<(), BlockError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Writes a block of `series` (ascending by reference) into `blocks_dir`, durably, and
/// opens it. `range` is the aligned range it covers; `sources` the blocks it replaces.
pub fn write<S: std::borrow::Borrow<SeriesData>>(
    blocks_dir: &Path,
    range: (i64, i64),
    sources: Vec<String>,
    series: impl IntoIterator<Item = S>,
) -> Result<Block, BlockError> {
    hale_fs::create_private_dir(blocks_dir).map_err(io(blocks_dir))?;
    let name = format!("{}-{}-{:08x}", range.0, range.1, rand::random::<u32>());
    let tmp = blocks_dir.join(format!("{name}{TMP}"));
    std::fs::create_dir(&tmp).map_err(io(&tmp))?;
    let result = write_files(&tmp, range, sources, series);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let dir = blocks_dir.join(&name);
    std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
    sync_dir(blocks_dir)?;
    Block::open(&dir, |l| Some(l.r))
}

fn write_files<S: std::borrow::Borrow<SeriesData>>(
    tmp: &Path,
    range: (i64, i64),
    sources: Vec<String>,
    series: impl IntoIterator<Item = S>,
) -> Result<(), BlockError> {
    let chunks_path = tmp.join("chunks");
    let mut chunks = BufWriter::new(private_file(&chunks_path)?);
    let mut labels_section = Vec::new();
    let mut metas_section = Vec::new();
    let mut table = Vec::new();
    let mut meta =
        Meta { version: 1, range, min_t: i64::MAX, max_t: i64::MIN, series: 0, chunks: 0, samples: 0, sources };
    let mut offset = 0u64;
    let mut last_ref: Option<SeriesRef> = None;
    for s in series {
        let s = s.borrow();
        let samples = s.all_samples();
        if samples.is_empty() {
            continue;
        }
        if last_ref.is_some_and(|l| l >= s.r) {
            return Err(BlockError::Corrupt {
                path: tmp.to_path_buf(),
                what: format!("series {} written out of order", s.r),
            });
        }
        last_ref = Some(s.r);
        let newest = samples.last().map_or(i64::MIN, |x| x.0);
        labels_section.extend_from_slice(&s.r.to_le_bytes());
        labels_section.extend_from_slice(&newest.to_le_bytes());
        labels_section.extend_from_slice(&(s.labels.len().min(MAX_LABELS) as u16).to_le_bytes());
        for (n, v) in s.labels.iter().take(MAX_LABELS) {
            put_str(&mut labels_section, n);
            put_str(&mut labels_section, v);
        }
        let entry_start = metas_section.len();
        let parts = samples.chunks(super::segment::MAX_SEGMENT);
        metas_section.extend_from_slice(&(parts.len() as u32).to_le_bytes());
        for part in parts {
            let bytes = super::segment::encode(part);
            let (min_t, max_t) = (part[0].0, part[part.len() - 1].0);
            chunks.write_all(&bytes).map_err(io(&chunks_path))?;
            metas_section.extend_from_slice(&min_t.to_le_bytes());
            metas_section.extend_from_slice(&max_t.to_le_bytes());
            metas_section.extend_from_slice(&offset.to_le_bytes());
            metas_section.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            metas_section.extend_from_slice(&(part.len() as u16).to_le_bytes());
            metas_section.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
            offset += bytes.len() as u64;
            meta.min_t = meta.min_t.min(min_t);
            meta.max_t = meta.max_t.max(max_t);
            meta.chunks += 1;
            meta.samples += part.len() as u64;
        }
        let crc = crc32fast::hash(&metas_section[entry_start..]);
        metas_section.extend_from_slice(&crc.to_le_bytes());
        table.extend_from_slice(&s.r.to_le_bytes());
        table.extend_from_slice(&(entry_start as u64).to_le_bytes());
        table.extend_from_slice(&((metas_section.len() - entry_start) as u32).to_le_bytes());
        meta.series += 1;
    }
    let file = chunks.into_inner().map_err(|e| io(&chunks_path)(e.into_error()))?;
    file.sync_all().map_err(io(&chunks_path))?;

    let labels_offset = MAGIC.len() as u64;
    let metas_offset = labels_offset + labels_section.len() as u64;
    let table_offset = metas_offset + metas_section.len() as u64;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&labels_section);
    crc.update(&table);
    let index_path = tmp.join("index");
    let mut index = BufWriter::new(private_file(&index_path)?);
    let mut footer = Vec::with_capacity(FOOTER);
    footer.extend_from_slice(&labels_offset.to_le_bytes());
    footer.extend_from_slice(&metas_offset.to_le_bytes());
    footer.extend_from_slice(&table_offset.to_le_bytes());
    footer.extend_from_slice(&(meta.series as u32).to_le_bytes());
    footer.extend_from_slice(&crc.finalize().to_le_bytes());
    for part in [&MAGIC[..], &labels_section, &metas_section, &table, &footer] {
        index.write_all(part).map_err(io(&index_path))?;
    }
    let file = index.into_inner().map_err(|e| io(&index_path)(e.into_error()))?;
    file.sync_all().map_err(io(&index_path))?;

    let meta_path = tmp.join("meta.json");
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| io(&meta_path)(std::io::Error::other(e)))?;
    let mut file = private_file(&meta_path)?;
    file.write_all(&json).and_then(|()| file.sync_all()).map_err(io(&meta_path))?;
    sync_dir(tmp)
}

/// A new file only its owner may read: samples are data, and data files are 0600.
fn private_file(path: &Path) -> Result<File, BlockError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io(path))
}

/// A series as the labels section lists it.
pub struct Listed {
    pub r: SeriesRef,
    /// Its newest sample in the block.
    pub newest: i64,
    pub labels: Vec<(String, String)>,
}

impl Block {
    /// Opens the block in `dir`. `resolve` maps each series (its reference and labels as
    /// written) to the head's reference for it, `None` to leave it out.
    pub fn open(dir: &Path, mut resolve: impl FnMut(&Listed) -> Option<SeriesRef>) -> Result<Block, BlockError> {
        let corrupt = |what: &str| BlockError::Corrupt { path: dir.to_path_buf(), what: what.to_string() };
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let meta_path = dir.join("meta.json");
        let meta: Meta = serde_json::from_slice(&std::fs::read(&meta_path).map_err(io(&meta_path))?)
            .map_err(|e| corrupt(&format!("meta.json: {e}")))?;
        if meta.version != 1 {
            return Err(corrupt(&format!("meta.json version {} (this build reads 1)", meta.version)));
        }
        let index_path = dir.join("index");
        let index = File::open(&index_path).map_err(io(&index_path))?;
        let chunks_path = dir.join("chunks");
        let chunks = File::open(&chunks_path).map_err(io(&chunks_path))?;
        let index_len = index.metadata().map_err(io(&index_path))?.len();
        let chunks_len = chunks.metadata().map_err(io(&chunks_path))?.len();
        if index_len < (MAGIC.len() + FOOTER) as u64 {
            return Err(corrupt("index too short"));
        }
        let mut footer = [0u8; FOOTER];
        index.read_exact_at(&mut footer, index_len - FOOTER as u64).map_err(io(&index_path))?;
        let mut f = Reader { bytes: &footer };
        let (labels_offset, metas_offset, table_offset) =
            (f.u64().unwrap_or(0), f.u64().unwrap_or(0), f.u64().unwrap_or(0));
        let (n, crc) = (f.u32().unwrap_or(0) as usize, f.u32().unwrap_or(0));
        let table_len = n as u64 * 16;
        if !(labels_offset <= metas_offset
            && metas_offset <= table_offset
            && table_offset.checked_add(table_len) == Some(index_len - FOOTER as u64))
        {
            return Err(corrupt("index footer"));
        }
        let mut labels = vec![0u8; (metas_offset - labels_offset) as usize];
        index.read_exact_at(&mut labels, labels_offset).map_err(io(&index_path))?;
        let mut table = vec![0u8; table_len as usize];
        index.read_exact_at(&mut table, table_offset).map_err(io(&index_path))?;
        let mut check = crc32fast::Hasher::new();
        check.update(&labels);
        check.update(&table);
        if check.finalize() != crc {
            return Err(corrupt("index checksum"));
        }
        let mut listed = Reader { bytes: &labels };
        let mut rows = Reader { bytes: &table };
        let mut resolved: Vec<(SeriesRef, (u64, u32))> = Vec::with_capacity(n);
        for _ in 0..n {
            let series = (|| {
                let r = listed.u32()?;
                let newest = listed.u64()? as i64;
                let count = usize::from(listed.u16()?);
                let mut labels = Vec::with_capacity(count.min(64));
                for _ in 0..count {
                    labels.push((listed.str()?, listed.str()?));
                }
                Some(Listed { r, newest, labels })
            })()
            .ok_or_else(|| corrupt("labels section"))?;
            let (r, offset, len) = (rows.u32(), rows.u64(), rows.u32());
            let (Some(r), Some(offset), Some(len)) = (r, offset, len) else { return Err(corrupt("table")) };
            if r != series.r || metas_offset + offset + u64::from(len) > table_offset {
                return Err(corrupt("table and labels disagree"));
            }
            if let Some(head_ref) = resolve(&series) {
                resolved.push((head_ref, (metas_offset + offset, len)));
            }
        }
        resolved.sort_unstable_by_key(|(r, _)| *r);
        resolved.dedup_by_key(|(r, _)| *r);
        let (refs, entries): (Vec<SeriesRef>, Vec<(u64, u32)>) = resolved.into_iter().unzip();
        Ok(Block {
            name,
            dir: dir.to_path_buf(),
            meta,
            refs: refs.into(),
            entries: entries.into(),
            index,
            chunks,
            bytes: index_len + chunks_len,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Bytes on disk (index and chunks).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the block may hold samples in `[mint, maxt]`.
    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.meta.max_t >= mint && self.meta.min_t <= maxt
    }

    /// The series the block holds, ascending.
    pub fn refs(&self) -> &[SeriesRef] {
        &self.refs
    }

    /// Where series `r` is in the block, if it is.
    pub fn position(&self, r: SeriesRef) -> Option<usize> {
        self.refs.binary_search(&r).ok()
    }

    /// The chunk metas of the series at `position`.
    pub fn chunk_metas(&self, position: usize) -> Result<Vec<ChunkMeta>, BlockError> {
        let path = self.dir.join("index");
        let corrupt = |what: &str| BlockError::Corrupt { path: path.clone(), what: what.to_string() };
        let Some(&(offset, len)) = self.entries.get(position) else { return Ok(Vec::new()) };
        let mut entry = vec![0u8; len as usize];
        self.index.read_exact_at(&mut entry, offset).map_err(io(&path))?;
        let body = entry.len().checked_sub(4).ok_or_else(|| corrupt("chunk entry too short"))?;
        let crc = u32::from_le_bytes([entry[body], entry[body + 1], entry[body + 2], entry[body + 3]]);
        if crc32fast::hash(&entry[..body]) != crc {
            return Err(corrupt("chunk entry checksum"));
        }
        let mut r = Reader { bytes: &entry[..body] };
        let n = r.u32().ok_or_else(|| corrupt("chunk entry"))? as usize;
        if n * CHUNK_META != r.bytes.len() {
            return Err(corrupt("chunk entry length"));
        }
        (0..n)
            .map(|_| {
                Some(ChunkMeta {
                    min_t: r.u64()? as i64,
                    max_t: r.u64()? as i64,
                    offset: r.u64()?,
                    len: r.u32()?,
                    count: r.u16()?,
                    crc: r.u32()?,
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| corrupt("chunk entry"))
    }

    /// The segments of the series at `position` that overlap `[mint, maxt]`, read with one
    /// positioned read and checked against their CRCs: (bytes, sample count).
    fn read_segments(&self, position: usize, mint: i64, maxt: i64) -> Result<Vec<(Vec<u8>, u16)>, BlockError> {
        let metas: Vec<ChunkMeta> =
            self.chunk_metas(position)?.into_iter().filter(|c| c.max_t >= mint && c.min_t <= maxt).collect();
        let (Some(first), Some(last)) = (metas.first(), metas.last()) else { return Ok(Vec::new()) };
        let path = self.dir.join("chunks");
        let start = first.offset;
        let end = last.offset + u64::from(last.len);
        if end < start || end - start > 1 << 30 {
            return Err(BlockError::Corrupt { path, what: "chunk offsets".into() });
        }
        let mut span = vec![0u8; (end - start) as usize];
        self.chunks.read_exact_at(&mut span, start).map_err(io(&path))?;
        metas
            .iter()
            .map(|c| {
                let from = (c.offset - start) as usize;
                let bytes =
                    span.get(from..from + c.len as usize).filter(|b| crc32fast::hash(b) == c.crc).ok_or_else(|| {
                        BlockError::Corrupt { path: path.clone(), what: format!("chunk at {} checksum", c.offset) }
                    })?;
                Ok((bytes.to_vec(), c.count))
            })
            .collect()
    }

    /// Appends the samples of the series at `position` in `[mint, maxt]` to `out`.
    pub fn read_samples(
        &self,
        position: usize,
        mint: i64,
        maxt: i64,
        out: &mut Vec<(i64, f64)>,
    ) -> Result<(), BlockError> {
        let mut samples = Vec::new();
        for (bytes, count) in self.read_segments(position, mint, maxt)? {
            samples.clear();
            super::segment::decode(&bytes, count, &mut samples).ok_or_else(|| BlockError::Corrupt {
                path: self.dir.join("chunks"),
                what: "a segment does not decode".into(),
            })?;
            out.extend(samples.iter().copied().filter(|(t, _)| *t >= mint && *t <= maxt));
        }
        Ok(())
    }

    /// Removes the block from disk: renamed to `<name>.deleting` first, so a crash midway
    /// leaves nothing that opens as a block. Open handles (a query reading it) keep
    /// working until they are dropped.
    pub fn delete(&self) -> Result<(), BlockError> {
        let Some(parent) = self.dir.parent() else { return Ok(()) };
        let doomed = parent.join(format!("{}{DELETING}", self.name));
        std::fs::rename(&self.dir, &doomed).map_err(io(&self.dir))?;
        sync_dir(parent)?;
        std::fs::remove_dir_all(&doomed).map_err(io(&doomed))
    }
}

/// The blocks in `blocks_dir`, opened, oldest first. Leftovers of a crash are cleared: a
/// half-written `.tmp` block, a half-deleted one, and the inputs of a compaction whose
/// output is complete. A block that does not open is set aside as `<name>.damaged` and
/// reported; the rest open.
pub fn open_all(
    blocks_dir: &Path,
    mut resolve: impl FnMut(&Listed) -> Option<SeriesRef>,
) -> Result<Vec<Block>, BlockError> {
    std::fs::create_dir_all(blocks_dir).map_err(io(blocks_dir))?;
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(blocks_dir).map_err(io(blocks_dir))?.flatten() {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        if name.ends_with(TMP) || name.ends_with(DELETING) {
            std::fs::remove_dir_all(&path).map_err(io(&path))?;
            continue;
        }
        if name.ends_with(".damaged") || !path.is_dir() {
            continue;
        }
        dirs.push((name, path));
    }
    // Compaction inputs whose output is whole go first, before any is opened.
    let mut replaced = std::collections::HashSet::new();
    for (_, path) in &dirs {
        if let Ok(bytes) = std::fs::read(path.join("meta.json"))
            && let Ok(meta) = serde_json::from_slice::<Meta>(&bytes)
        {
            replaced.extend(meta.sources);
        }
    }
    let mut blocks = Vec::new();
    for (name, path) in dirs {
        if replaced.contains(&name) {
            let doomed = blocks_dir.join(format!("{name}{DELETING}"));
            std::fs::rename(&path, &doomed).map_err(io(&path))?;
            std::fs::remove_dir_all(&doomed).map_err(io(&doomed))?;
            continue;
        }
        match Block::open(&path, &mut resolve) {
            Ok(block) => blocks.push(block),
            Err(e) => {
                tracing::error!(block = %path.display(), error = %e, "block does not open; set aside as .damaged");
                let aside = blocks_dir.join(format!("{name}.damaged"));
                std::fs::rename(&path, &aside).map_err(io(&path))?;
            }
        }
    }
    sync_dir(blocks_dir)?;
    blocks.sort_by_key(|b| (b.meta.range, b.meta.min_t));
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chunk::Chunk;

    fn chunks_of(samples: &[(i64, f64)]) -> Vec<ChunkData> {
        samples
            .chunks(usize::from(crate::store::chunk::MAX_SAMPLES))
            .map(|part| {
                let mut c = Chunk::new();
                for (t, v) in part {
                    assert!(c.append(*t, *v));
                }
                let (bytes, count) = c.encoded();
                ChunkData { bytes: bytes.to_vec(), count, min_t: part[0].0, max_t: part[part.len() - 1].0 }
            })
            .collect()
    }

    fn series(r: SeriesRef, n: i64) -> SeriesData {
        let samples: Vec<(i64, f64)> = (0..n).map(|i| (i * 15_000, (i * i64::from(r)) as f64)).collect();
        SeriesData {
            r,
            labels: vec![("__name__".into(), "m".into()), ("i".into(), r.to_string())],
            chunks: chunks_of(&samples),
            samples: Vec::new(),
        }
    }

    #[test]
    fn a_block_reads_back_what_was_written_by_series_and_time() {
        let dir = tempfile::tempdir().expect("tmp");
        let block =
            write(dir.path(), (0, 7_200_000), vec![], [series(3, 500), series(7, 10), series(9, 1)]).expect("write");
        for file in ["chunks", "index", "meta.json"] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(block.name()).join(file)).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file}: data files are the owner's alone");
        }
        assert_eq!(block.refs(), [3, 7, 9]);
        assert_eq!((block.meta().series, block.meta().samples, block.meta().chunks), (3, 511, 3));
        let mut out = Vec::new();
        block.read_samples(0, 0, i64::MAX, &mut out).expect("read");
        assert_eq!(out.len(), 500);
        assert_eq!(out[499], (499 * 15_000, 499.0 * 3.0));
        out.clear();
        block.read_samples(0, 100 * 15_000, 130 * 15_000, &mut out).expect("read");
        assert_eq!(out.first().map(|s| s.0), Some(100 * 15_000));
        assert_eq!(out.len(), 31, "only the range, from the chunks that overlap it");
        assert_eq!(block.position(8), None);
        // Reopened from disk, with the labels given to the resolver.
        let mut seen = Vec::new();
        let again = Block::open(&dir.path().join(block.name()), |l| {
            seen.push((l.r, l.newest, l.labels[1].1.clone()));
            Some(l.r + 100)
        })
        .expect("open");
        assert_eq!(seen, [(3, 499 * 15_000, "3".into()), (7, 9 * 15_000, "7".into()), (9, 0, "9".into())]);
        assert_eq!(again.refs(), [103, 107, 109], "mapped to the head's references");
    }

    #[test]
    fn damage_is_reported_and_set_aside_never_misread() {
        let dir = tempfile::tempdir().expect("tmp");
        let block = write(dir.path(), (0, 7_200_000), vec![], [series(1, 300), series(2, 300)]).expect("write");
        let path = dir.path().join(block.name());
        // A flipped byte in the chunks: the read fails its checksum.
        let mut chunks = std::fs::read(path.join("chunks")).expect("read");
        chunks[5] ^= 0x55;
        std::fs::write(path.join("chunks"), &chunks).expect("write");
        let mut out = Vec::new();
        let e = block.read_samples(0, 0, i64::MAX, &mut out).expect_err("damaged");
        assert!(e.to_string().contains("checksum"), "{e}");
        // A flipped byte in the index's labels: the block does not open, and is set aside.
        let mut index = std::fs::read(path.join("index")).expect("read");
        index[12] ^= 0x01;
        std::fs::write(path.join("index"), &index).expect("write");
        assert!(Block::open(&path, |l| Some(l.r)).is_err());
        drop(block);
        let other = write(dir.path(), (7_200_000, 14_400_000), vec![], [series(1, 10)]).expect("write");
        let blocks = open_all(dir.path(), |l| Some(l.r)).expect("open all");
        assert_eq!(blocks.iter().map(Block::name).collect::<Vec<_>>(), [other.name()]);
        assert!(
            dir.path().join(format!("{}.damaged", path.file_name().and_then(|n| n.to_str()).unwrap_or(""))).exists()
        );
    }

    #[test]
    fn crash_leftovers_are_cleared_at_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = write(dir.path(), (0, 7_200_000), vec![], [series(1, 10)]).expect("a");
        let b = write(dir.path(), (7_200_000, 14_400_000), vec![], [series(1, 10)]).expect("b");
        // A compaction of a and b that finished writing but crashed before deleting them.
        let c = write(dir.path(), (0, 86_400_000), vec![a.name().into(), b.name().into()], [series(1, 20)]).expect("c");
        std::fs::create_dir(dir.path().join("x.tmp")).expect("tmp");
        std::fs::create_dir(dir.path().join("y.deleting")).expect("deleting");
        let blocks = open_all(dir.path(), |l| Some(l.r)).expect("open all");
        assert_eq!(blocks.iter().map(Block::name).collect::<Vec<_>>(), [c.name()]);
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        assert_eq!(left, [c.name()]);
        // A deleted block's open handle still reads.
        c.delete().expect("delete");
        let mut out = Vec::new();
        blocks[0].read_samples(0, 0, i64::MAX, &mut out).expect("still readable");
        assert_eq!(out.len(), 20);
    }

    #[test]
    fn series_must_come_in_reference_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let e = write(dir.path(), (0, 1), vec![], [series(5, 1), series(5, 1)]).expect_err("order");
        assert!(e.to_string().contains("out of order"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0, "no leftover");
    }
}
