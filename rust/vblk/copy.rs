// SPDX-License-Identifier: GPL-2.0
//! The copy service (as dm's kcopyd): copies a sector range of one lower
//! device to one or several others, in the background, throttled, and
//! tells the client how it went. Mirror resync uses it; snapshot COW,
//! raid5 rebuild and thin block copies are its next clients.
//!
//! A [`Copier`] runs its jobs one after the other on its owner's worker
//! queue, in chunks of [`CHUNK_BYTES`]: each chunk is read from the source
//! and written to every destination at once. A failed destination is
//! noted and left out of later chunks; a failed read ends the job. Between
//! chunks the copier pauses while the client says it is busy (user I/O),
//! and it stops early when told to. Its memory (the chunk buffer, the job
//! queue) is allocated when it is made: a copy never allocates, so it
//! runs under memory pressure.

use super::slots::Slots;
use crate::sys::aio::{self, DestErrors};
use crate::sys::bdev::{BlockDevice, IoBuffer, WriteFlags};
use crate::sys::workqueue::{Deferred, Job, OwnedQueue};
use kernel::error::code::{EBUSY, EINTR, EINVAL};
use kernel::error::Result;
use kernel::prelude::*;
use kernel::sync::{Arc, CondVar, Mutex};

/// Bytes copied per chunk.
pub(crate) const CHUNK_BYTES: usize = 64 * 1024;
/// Most destinations of one job.
pub(crate) const MAX_COPY_DESTS: usize = 8;
/// Pause between chunks while the client is busy.
const THROTTLE_MS: u32 = 2;

/// One copy: `len` sectors from `sector` of the source to each
/// destination, named `key` for the client.
pub(crate) struct CopyJob {
    from: (Arc<BlockDevice>, u64),
    dests: [Option<(Arc<BlockDevice>, u64)>; MAX_COPY_DESTS],
    len: u64,
    key: u64,
}

impl CopyJob {
    /// A job copying `len` sectors of `src` from `sector` on, to no
    /// destination yet.
    pub(crate) fn new(src: &Arc<BlockDevice>, sector: u64, len: u64, key: u64) -> Self {
        CopyJob {
            from: (src.clone(), sector),
            dests: Default::default(),
            len,
            key,
        }
    }

    /// Adds destination `dev` at `sector` (its index in
    /// [`CopyResult::write_failed`] is the number added before it);
    /// `EINVAL` past [`MAX_COPY_DESTS`].
    pub(crate) fn to(&mut self, dev: &Arc<BlockDevice>, sector: u64) -> Result {
        let slot = self.dests.iter_mut().find(|d| d.is_none()).ok_or(EINVAL)?;
        *slot = Some((dev.clone(), sector));
        Ok(())
    }
}

/// How a copy ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CopyResult {
    /// Reading the source failed: nothing from the failed chunk on was
    /// written.
    pub(crate) read_failed: bool,
    /// Destinations a write failed on (by [`CopyJob::to`] order); the
    /// copy went on to the others.
    pub(crate) write_failed: DestErrors,
    /// Stopped ([`Copier::stop`]) before the end.
    pub(crate) aborted: bool,
}

impl CopyResult {
    /// Every destination has the whole range.
    pub(crate) fn complete(&self) -> bool {
        !self.read_failed && !self.write_failed.any() && !self.aborted
    }
}

/// What a copier reports to.
pub(crate) trait CopyClient: Send + Sync + 'static {
    /// Job `key` ended (on the copier's worker: process context, may
    /// sleep, may submit more jobs).
    fn copy_done(this: &Arc<Self>, key: u64, result: CopyResult);

    /// Whether user I/O is running, so the copy should pause a little
    /// before its next chunk.
    fn busy(&self) -> bool {
        false
    }
}

/// The copier's queue and buffer.
#[pin_data]
pub(crate) struct CopyQueue<C: CopyClient> {
    #[pin]
    jobs: Mutex<Jobs<C>>,
    /// Wakes a throttled copy when told to stop.
    #[pin]
    wake: CondVar,
    /// The chunk buffer (only the running job uses it).
    #[pin]
    buf: Mutex<IoBuffer>,
}

struct Jobs<C> {
    /// Waiting jobs, with the client each reports to (its reference is
    /// dropped once the job reported).
    queue: Slots<(CopyJob, Arc<C>)>,
    /// Refuse and abort jobs ([`Copier::stop`]) until [`Copier::start`].
    stopped: bool,
    /// A job was taken out and has not reported yet.
    running: bool,
}

/// Copies ranges in the background on `worker` (see the module's doc).
pub(crate) struct Copier<C: CopyClient> {
    job: Arc<Job<CopyQueue<C>>>,
    worker: Arc<OwnedQueue>,
}

impl<C: CopyClient> Copier<C> {
    /// A copier running on `worker` that queues up to `capacity` jobs.
    pub(crate) fn new(worker: &Arc<OwnedQueue>, capacity: usize) -> Result<Self> {
        let queue = Slots::new(capacity)?;
        let buf = IoBuffer::new(CHUNK_BYTES)?;
        let job = Arc::pin_init(
            Job::new(pin_init!(CopyQueue {
                jobs <- kernel::new_mutex!(Jobs { queue, stopped: true, running: false }, "vblk::Copier::jobs"),
                wake <- kernel::new_condvar!("vblk::Copier::wake"),
                buf <- kernel::new_mutex!(buf, "vblk::Copier::buf"),
            })),
            GFP_KERNEL,
        )?;
        Ok(Copier {
            job,
            worker: worker.clone(),
        })
    }

    /// Queues `job`, which reports to `client` when it ends; `EBUSY` (the
    /// job is dropped) if the queue is full or the copier stopped (process
    /// context).
    pub(crate) fn submit(&self, client: &Arc<C>, job: CopyJob) -> Result {
        let mut jobs = self.job.jobs.lock();
        if jobs.stopped {
            return Err(EBUSY);
        }
        jobs.queue.put((job, client.clone())).map_err(|_| EBUSY)?;
        drop(jobs);
        self.worker.kick(&self.job);
        Ok(())
    }

    /// Accepts jobs (a new copier refuses them until started).
    pub(crate) fn start(&self) {
        self.job.jobs.lock().stopped = false;
    }

    /// Refuses new jobs, ends the running one after its chunk and reports
    /// every queued one aborted; returns once all reported (process
    /// context; the caller holds none of its clients' locks). With
    /// `interruptible`, a signal ends the wait (`EINTR`: a chunk can hang
    /// on a hung device, and SUSPEND must not hang with it); the jobs still
    /// report, later.
    pub(crate) fn stop(&self, interruptible: bool) -> Result {
        let mut jobs = self.job.jobs.lock();
        jobs.stopped = true;
        self.job.wake.notify_all();
        self.worker.kick(&self.job);
        while jobs.running || !jobs.queue.is_empty() {
            if !interruptible {
                self.job.wake.wait(&mut jobs);
            } else if self.job.wake.wait_interruptible(&mut jobs) {
                return Err(EINTR);
            }
        }
        Ok(())
    }
}

impl<C: CopyClient> Deferred for CopyQueue<C> {
    fn run(job: &Arc<Job<Self>>) {
        loop {
            let mut jobs = job.jobs.lock();
            let Some((next, client)) = jobs.queue.take_oldest(|_| true) else {
                return;
            };
            let stopped = jobs.stopped;
            jobs.running = true;
            drop(jobs);
            let result = if stopped {
                CopyResult {
                    aborted: true,
                    ..CopyResult::default()
                }
            } else {
                job.copy(&next, &*client)
            };
            C::copy_done(&client, next.key, result);
            drop(client);
            job.jobs.lock().running = false;
            job.wake.notify_all();
        }
    }
}

impl<C: CopyClient> CopyQueue<C> {
    /// Runs one job, chunk by chunk.
    fn copy(&self, job: &CopyJob, client: &C) -> CopyResult {
        let mut result = CopyResult::default();
        let mut buf = self.buf.lock();
        let step = (CHUNK_BYTES / 512) as u64;
        let mut done = 0;
        while done < job.len {
            if self.jobs.lock().stopped {
                result.aborted = true;
                break;
            }
            let n = (job.len - done).min(step);
            let bytes = 0..(n * 512) as usize;
            let (src, from) = &job.from;
            if src.read_at(from + done, &mut buf, bytes.clone()).is_err() {
                result.read_failed = true;
                break;
            }
            // The destinations still working (unused entries: placeholders),
            // and their indexes in the job.
            let mut targets: [(&BlockDevice, u64); MAX_COPY_DESTS] = [(&**src, 0); MAX_COPY_DESTS];
            let mut index = [0usize; MAX_COPY_DESTS];
            let mut count = 0;
            for (i, d) in job.dests.iter().enumerate() {
                if let Some((dev, at)) = d {
                    if !result.write_failed.failed(i) {
                        targets[count] = (&**dev, at + done);
                        index[count] = i;
                        count += 1;
                    }
                }
            }
            if count == 0 {
                break;
            }
            let failed = aio::write_many(&targets[..count], &buf, bytes, WriteFlags::default())
                .unwrap_or(DestErrors(u32::MAX));
            for (k, &i) in index.iter().enumerate().take(count) {
                if failed.failed(k) {
                    result.write_failed.0 |= 1 << i;
                }
            }
            done += n;
            if client.busy() {
                let mut jobs = self.jobs.lock();
                if !jobs.stopped {
                    let _ = self.wake.wait_interruptible_timeout(
                        &mut jobs,
                        kernel::time::msecs_to_jiffies(THROTTLE_MS),
                    );
                }
            }
        }
        result
    }
}
