//! An upload's bytes on their way to disk: hashed, copied and written on
//! threads of their own, beside the task that receives them.
//!
//! Hashing in the receiving task held every upload to SHA-256's speed plus
//! the copies: under 40% of what `cp` does on the same disk. Here the
//! receiver only hands chunks on in batches (reference counts, not copies).
//! One thread copies them into blocks aligned for direct I/O and hashes
//! each piece right after copying it, while it is still in the CPU's cache
//! (hashing and copying on two threads read every byte from memory twice);
//! another writes the full blocks, so the disk's wait overlaps the next
//! block's copy. Direct I/O, where the filesystem allows it, skips the copy
//! into the page cache (the largest cost of a buffered write). The channels
//! are bounded, so memory stays at a few batches and blocks whatever the
//! size of the upload, and a slow disk slows the sender down instead of
//! filling memory.

use std::fs::File;
use std::io::{self, Write};
use std::num::NonZeroU64;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc as blocking;

use bytes::Bytes;
use rustix::fs::Advice;
use sha2::{Digest as _, Sha256};
use stackyard_core::Digest;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Chunks are handed on in batches of at least this many bytes: one thread
/// wake-up per chunk of a few kilobytes cost more than the copying.
const BATCH: usize = 256 * 1024;
/// Batches waiting for the hashing thread, at most.
const BATCHES_IN_FLIGHT: usize = 8;
/// Writes are gathered into blocks of this size.
const BLOCK: usize = 1024 * 1024;
/// Full blocks waiting for the disk, at most.
const BLOCKS_QUEUED: usize = 2;
/// Bytes copied before they are hashed: small enough to still be in the
/// CPU's first-level cache.
const PIECE: usize = 16 * 1024;
/// What direct I/O needs buffers, offsets and lengths aligned to (a page
/// covers every disk's logical block size).
const ALIGNMENT: usize = 4096;
/// How much is written before the kernel is asked to start putting it on disk.
const WRITEBACK_STEP: u64 = 32 * 1024 * 1024;

pub struct Spool {
    batch: Vec<Bytes>,
    batched: usize,
    to_spool: mpsc::Sender<Vec<Bytes>>,
    spooling: JoinHandle<io::Result<Digest>>,
}

impl Spool {
    /// Creates (or truncates) the spool file at `path`.
    pub async fn create(path: &Path) -> io::Result<Self> {
        let (file, direct) = open(path).await?;
        let (to_spool, batches) = mpsc::channel(BATCHES_IN_FLIGHT);
        let spooling = tokio::task::spawn_blocking(move || spool_all(file, direct, batches));
        Ok(Self { batch: Vec::new(), batched: 0, to_spool, spooling })
    }

    /// Takes a chunk, handing a batch on once there is enough.
    /// After an error, the spool is done with.
    pub async fn push(&mut self, chunk: Bytes) -> io::Result<()> {
        self.batched += chunk.len();
        self.batch.push(chunk);
        if self.batched < BATCH {
            return Ok(());
        }
        self.send().await
    }

    async fn send(&mut self) -> io::Result<()> {
        let batch = std::mem::take(&mut self.batch);
        self.batched = 0;
        if self.to_spool.send(batch).await.is_err() {
            // The threads only stop early on an error, which is the answer.
            return match (&mut self.spooling).await.map_err(io::Error::other)? {
                Err(e) => Err(e),
                Ok(_) => Err(io::Error::other("the spool stopped")),
            };
        }
        Ok(())
    }

    /// Waits until every byte is written (not yet synced to disk: the blob
    /// store does that as it takes the file) and answers their digest.
    /// Dropping a spool instead abandons it: its threads stop on their own.
    pub async fn finish(mut self) -> io::Result<Digest> {
        if !self.batch.is_empty() {
            self.send().await?;
        }
        let Self { to_spool, spooling, .. } = self;
        // Closing the channel ends the threads once they have drained it.
        drop(to_spool);
        spooling.await.map_err(io::Error::other)?
    }
}

/// Opens the spool file for direct I/O when its filesystem allows it.
async fn open(path: &Path) -> io::Result<(File, bool)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        let direct_flag = i32::try_from(rustix::fs::OFlags::DIRECT.bits()).expect("a small flag");
        match options.clone().custom_flags(direct_flag).open(&path) {
            Ok(file) => Ok((file, true)),
            // Some filesystems refuse O_DIRECT; they get ordinary writes.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                Ok((options.open(&path)?, false))
            }
            Err(e) => Err(e),
        }
    })
    .await
    .map_err(io::Error::other)?
}

/// Copies the chunks into blocks of [`BLOCK`] bytes, hashing them as it
/// goes, while a thread of its own writes the full blocks. With direct I/O
/// they go from these buffers to the disk, and nothing is left for the
/// final sync but metadata.
fn spool_all(file: File, direct: bool, mut batches: mpsc::Receiver<Vec<Bytes>>) -> io::Result<Digest> {
    let (to_disk, full) = blocking::sync_channel(BLOCKS_QUEUED);
    let (to_refill, empty) = blocking::channel();
    std::thread::scope(|scope| {
        let disk = scope.spawn(|| write_blocks(&file, direct, full, to_refill));
        let digest = fill_and_hash(&mut batches, to_disk, empty);
        let written =
            disk.join().unwrap_or_else(|_| Err(io::Error::other("the spool's disk writer panicked")));
        // The disk side's error, when there is one, is why filling stopped.
        written.map(|()| digest)
    })
}

/// Copies the chunks into blocks, hashing each piece just copied, and
/// queues every full block (and the last, partial one) for the disk. Stops
/// early when the disk side has stopped, which only happens on an error:
/// the disk side answers with it.
fn fill_and_hash(
    batches: &mut mpsc::Receiver<Vec<Bytes>>,
    to_disk: blocking::SyncSender<Block>,
    empty: blocking::Receiver<Block>,
) -> Digest {
    let mut hasher = Sha256::new();
    // A block comes back once written; a new one is only made when none is
    // free, so there are never more than the queue plus the two in use.
    let next_block = || empty.try_recv().unwrap_or_else(|_| Block::new());
    let mut block = next_block();
    'receiving: while let Some(batch) = batches.blocking_recv() {
        for chunk in &batch {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let (copied, left) = block.fill_from(rest, PIECE);
                hasher.update(copied);
                rest = left;
                if block.is_full() {
                    let full = std::mem::replace(&mut block, next_block());
                    if to_disk.send(full).is_err() {
                        break 'receiving;
                    }
                }
            }
        }
    }
    if block.filled > 0 {
        let _ = to_disk.send(block);
    }
    Digest::from_sha256(&hasher.finalize())
}

/// Writes the blocks in order. With direct I/O the last block is padded to
/// the alignment direct I/O needs, then the file is cut back to its length.
fn write_blocks(
    file: &File,
    direct: bool,
    full: blocking::Receiver<Block>,
    to_refill: blocking::Sender<Block>,
) -> io::Result<()> {
    let (mut written, mut kicked, mut padded_tail) = (0u64, 0u64, false);
    let mut out = file;
    for mut block in full {
        let filled = block.filled;
        let bytes = if direct { block.padded() } else { block.filled() };
        padded_tail = bytes.len() > filled;
        out.write_all(bytes)?;
        written += filled as u64;
        if !direct && written - kicked >= WRITEBACK_STEP {
            // Starts writeback of what is written so far, in the background
            // (and lets the page cache drop it once clean), so the sync that
            // makes the package durable has little left to wait for. Only
            // advice: nothing depends on it succeeding.
            let _ = rustix::fs::fadvise(file, kicked, NonZeroU64::new(written - kicked), Advice::DontNeed);
            kicked = written;
        }
        block.filled = 0;
        let _ = to_refill.send(block);
    }
    if padded_tail {
        file.set_len(written)?;
    }
    Ok(())
}

/// [`BLOCK`] bytes aligned for direct I/O, and how many of them hold data.
struct Block {
    storage: Vec<u8>,
    start: usize,
    filled: usize,
}

impl Block {
    fn new() -> Self {
        let storage = vec![0u8; BLOCK + ALIGNMENT];
        let start = storage.as_ptr().align_offset(ALIGNMENT);
        Self { storage, start, filled: 0 }
    }

    fn bytes(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + BLOCK]
    }

    /// Copies as much of `data` as fits, `at_most` bytes; returns the copy
    /// (in the block) and the rest of `data`.
    fn fill_from<'d>(&mut self, data: &'d [u8], at_most: usize) -> (&[u8], &'d [u8]) {
        let filled = self.filled;
        let n = data.len().min(BLOCK - filled).min(at_most);
        self.filled += n;
        let copy = &mut self.bytes()[filled..filled + n];
        copy.copy_from_slice(&data[..n]);
        (copy, &data[n..])
    }

    fn is_full(&self) -> bool {
        self.filled == BLOCK
    }

    fn filled(&mut self) -> &[u8] {
        let filled = self.filled;
        &self.bytes()[..filled]
    }

    /// The data, zero-padded up to the alignment.
    fn padded(&mut self) -> &[u8] {
        let (filled, padded) = (self.filled, self.filled.next_multiple_of(ALIGNMENT));
        let bytes = self.bytes();
        bytes[filled..padded].fill(0);
        &bytes[..padded]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that differ at every offset, so a block written twice or out of order shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ (i / 251) as u8).collect()
    }

    async fn spool(path: &Path, data: &[u8], chunk: usize) -> io::Result<Digest> {
        let mut spool = Spool::create(path).await?;
        for piece in data.chunks(chunk) {
            spool.push(Bytes::copy_from_slice(piece)).await?;
        }
        spool.finish().await
    }

    #[tokio::test]
    async fn writes_and_hashes_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        // Empty, below one block, unaligned tails, exact blocks, many batches.
        for len in [0, 1, 4095, 4097, BLOCK, BLOCK + 1, 3 * BLOCK + 777, 5 * BATCH + 12_345] {
            for chunk in [1000, 64 * 1024, 3 * BLOCK] {
                let data = pattern(len);
                let path = dir.path().join(format!("{len}-{chunk}"));
                let digest = spool(&path, &data, chunk).await.unwrap();
                assert_eq!(digest, Digest::from_sha256(&Sha256::digest(&data)), "{len} bytes in {chunk}");
                assert!(std::fs::read(&path).unwrap() == data, "{len} bytes in {chunk}: contents differ");
            }
        }
    }

    #[tokio::test]
    async fn takes_direct_io_where_the_filesystem_allows_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_, direct) = open(&dir.path().join("f")).await.unwrap();
        // The data dir of the tests is on ext4 or tmpfs, both of which take O_DIRECT.
        assert!(direct, "O_DIRECT was refused");
    }

    #[tokio::test]
    async fn reports_the_writers_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("f");
        assert_eq!(spool(&missing, b"x", 1).await.unwrap_err().kind(), io::ErrorKind::NotFound);
        // /dev/full takes the open and fails every write with ENOSPC.
        let error = spool(Path::new("/dev/full"), &pattern(BLOCK * 4), BATCH).await.unwrap_err();
        assert_eq!(error.raw_os_error(), Some(rustix::io::Errno::NOSPC.raw_os_error()));
    }
}
