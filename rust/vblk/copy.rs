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
use crate::sys::aio::{AioDest, AioDone, AioOp, AsyncIo, DestErrors};
use crate::sys::bdev::{BlockDevice, IoBuffer, WriteFlags};
use crate::sys::workqueue::{Deferred, Job, OwnedQueue};
use kernel::error::code::{EBUSY, EINTR, EINVAL};
use kernel::error::{Error, Result};
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

/// The copier's queue, its lanes and their chunk I/O.
#[pin_data]
pub(crate) struct CopyQueue<C: CopyClient> {
    #[pin]
    jobs: Mutex<Jobs<C>>,
    /// Wakes a throttled copy when told to stop, and `stop` when a job
    /// reported.
    #[pin]
    wake: CondVar,
    /// Each lane's chunk I/O: a read from the source, then a write to
    /// every destination at once; its completion kicks the copier again.
    aios: KVec<AsyncIo<Job<CopyQueue<C>>>>,
    /// Where the copier runs (kicked by the chunk I/O's completion).
    worker: Arc<OwnedQueue>,
}

struct Jobs<C> {
    /// Waiting jobs, with the client each reports to (its reference is
    /// dropped once the job reported).
    queue: Slots<(CopyJob, Arc<C>)>,
    /// Refuse and abort jobs ([`Copier::stop`]) until [`Copier::start`].
    stopped: bool,
    /// Jobs copied side by side, one per lane.
    lanes: KVec<Lane<C>>,
}

/// One job at a time, with its own chunk buffer.
struct Lane<C> {
    /// The job being copied, from its start until it reported.
    running: Option<Running<C>>,
    /// The chunk buffer; `None` while the lane's chunk I/O has it.
    buf: Option<IoBuffer>,
}

/// The job being copied and how far it got.
struct Running<C> {
    job: CopyJob,
    client: Arc<C>,
    /// Sectors copied to every destination still working.
    done: u64,
    result: CopyResult,
    step: Step,
}

/// What the running job does next.
#[derive(Clone, Copy)]
enum Step {
    /// Read the next chunk.
    Read,
    /// The chunk of `n` sectors is being read.
    Reading(u64),
    /// Write the chunk of `n` sectors that was read.
    Write(u64),
    /// The chunk of `n` sectors is being written; `index[k]` is the job's
    /// destination the batch's destination `k` is.
    Writing(u64, [u8; MAX_COPY_DESTS]),
    /// Over: report.
    Report,
}

/// Copies ranges in the background on `worker` (see the module's doc).
pub(crate) struct Copier<C: CopyClient> {
    job: Arc<Job<CopyQueue<C>>>,
}

impl<C: CopyClient> Copier<C> {
    /// Bytes of buffers a copier with `lanes` lanes holds (for the
    /// table's charge).
    pub(crate) fn state_bytes(lanes: usize) -> u64 {
        (lanes * CHUNK_BYTES) as u64
    }

    /// A copier running on `worker` that queues up to `capacity` jobs and
    /// copies up to `lanes` of them side by side (at least one).
    pub(crate) fn new(worker: &Arc<OwnedQueue>, capacity: usize, lanes: usize) -> Result<Self> {
        let queue = Slots::new(capacity)?;
        let n = lanes.max(1);
        let mut aios = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut state = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            aios.push(AsyncIo::new()?, GFP_KERNEL)?;
            let lane = Lane {
                running: None,
                buf: Some(IoBuffer::new(CHUNK_BYTES)?),
            };
            state.push(lane, GFP_KERNEL)?;
        }
        let job = Arc::pin_init(
            Job::new(pin_init!(CopyQueue {
                jobs <- kernel::new_mutex!(
                    Jobs { queue, stopped: true, lanes: state },
                    "vblk::Copier::jobs"
                ),
                wake <- kernel::new_condvar!("vblk::Copier::wake"),
                aios,
                worker: worker.clone(),
            })),
            GFP_KERNEL,
        )?;
        Ok(Copier { job })
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
        self.job.worker.kick(&self.job);
        Ok(())
    }

    /// Accepts jobs (a new copier refuses them until started).
    pub(crate) fn start(&self) {
        self.job.jobs.lock().stopped = false;
    }

    /// Refuses new jobs, ends the running ones after their chunk and
    /// reports every queued one aborted; returns once all reported
    /// (process context; the caller holds none of its clients' locks).
    /// With `interruptible`, a signal ends the wait (`EINTR`: a chunk can
    /// hang on a hung device, and SUSPEND must not hang with it); the jobs
    /// still report, later.
    pub(crate) fn stop(&self, interruptible: bool) -> Result {
        let mut jobs = self.job.jobs.lock();
        jobs.stopped = true;
        self.job.wake.notify_all();
        self.job.worker.kick(&self.job);
        while jobs.lanes.iter().any(|l| l.running.is_some()) || !jobs.queue.is_empty() {
            if !interruptible {
                self.job.wake.wait(&mut jobs);
            } else if self.job.wake.wait_interruptible(&mut jobs) {
                return Err(EINTR);
            }
        }
        Ok(())
    }
}

impl<C: CopyClient> AioDone for Job<CopyQueue<C>> {
    fn aio_done(this: &Arc<Self>) {
        this.worker.kick(this);
    }
}

impl<C: CopyClient> Deferred for CopyQueue<C> {
    /// Moves every lane's job on, a step at a time, until each waits for
    /// its chunk I/O (whose completion kicks this again) or has nothing
    /// to do. Never waits for I/O.
    fn run(job: &Arc<Job<Self>>) {
        loop {
            let mut moved = false;
            for lane in 0..job.aios.len() {
                moved |= Self::step(job, lane);
            }
            if !moved {
                return;
            }
        }
    }
}

impl<C: CopyClient> CopyQueue<C> {
    /// One step of lane `i`: takes its ended chunk I/O, starts a job,
    /// starts the next chunk I/O or reports. Whether it did anything.
    fn step(job: &Arc<Job<Self>>, i: usize) -> bool {
        let mut jobs = job.jobs.lock();
        let aio = &job.aios[i];
        if jobs.lanes[i].buf.is_none() {
            // A chunk I/O is out: go on once it ended.
            let Some((buf, errors)) = aio.take() else {
                return false;
            };
            let lane = &mut jobs.lanes[i];
            lane.buf = Some(buf);
            if let Some(run) = lane.running.as_mut() {
                run.chunk_ended(errors);
            }
        }
        if jobs.lanes[i].running.is_none() {
            let Some((next, client)) = jobs.queue.take_oldest(|_| true) else {
                return false;
            };
            jobs.lanes[i].running = Some(Running {
                job: next,
                client,
                done: 0,
                result: CopyResult::default(),
                step: Step::Read,
            });
        }
        let stopped = jobs.stopped;
        let Some(run) = jobs.lanes[i].running.as_mut() else {
            return false;
        };
        if stopped && !matches!(run.step, Step::Report) {
            run.result.aborted = true;
            run.step = Step::Report;
        }
        match run.step {
            Step::Report => {
                // Still `running` while it reports: `stop` waits for the
                // report too.
                let (client, key, result) = (run.client.clone(), run.job.key, run.result);
                drop(jobs);
                C::copy_done(&client, key, result);
                drop(client);
                job.jobs.lock().lanes[i].running = None;
                job.wake.notify_all();
                true
            }
            Step::Read | Step::Write(_) => {
                if matches!(run.step, Step::Read) && run.done > 0 && run.client.busy() {
                    // Between chunks, user I/O goes first: a pause, then
                    // the chunk (unless the copier stopped meanwhile).
                    let _ = job.wake.wait_interruptible_timeout(
                        &mut jobs,
                        kernel::time::msecs_to_jiffies(THROTTLE_MS),
                    );
                    if jobs.stopped {
                        return true;
                    }
                }
                let lane = &mut jobs.lanes[i];
                let (Some(buf), Some(run)) = (lane.buf.take(), lane.running.as_mut()) else {
                    return false;
                };
                if let Err((_, buf)) = run.next_io(job, aio, buf) {
                    lane.buf = Some(buf);
                }
                true
            }
            Step::Reading(_) | Step::Writing(..) => false,
        }
    }
}

impl<C: CopyClient> Running<C> {
    /// Starts the next chunk I/O with `buf`: the read of the next chunk
    /// (the job ends when all is copied), or the write of the chunk read
    /// to every destination still working (the job ends when none is).
    /// Gives `buf` back when no I/O is out.
    fn next_io(
        &mut self,
        job: &Arc<Job<CopyQueue<C>>>,
        aio: &AsyncIo<Job<CopyQueue<C>>>,
        buf: IoBuffer,
    ) -> core::result::Result<(), (Error, IoBuffer)> {
        let (src, from) = &self.job.from;
        if let Step::Write(n) = self.step {
            let bytes = 0..(n * 512) as usize;
            // The destinations still working (unused entries: placeholders).
            let mut dests: [AioDest<'_>; MAX_COPY_DESTS] = core::array::from_fn(|_| AioDest {
                dev: src,
                sector: 0,
                bytes: 0..0,
            });
            let mut index = [0u8; MAX_COPY_DESTS];
            let mut count = 0;
            for (i, d) in self.job.dests.iter().enumerate() {
                if let Some((dev, at)) = d {
                    if !self.result.write_failed.failed(i) {
                        dests[count] = AioDest {
                            dev,
                            sector: at + self.done,
                            bytes: bytes.clone(),
                        };
                        index[count] = i as u8;
                        count += 1;
                    }
                }
            }
            if count == 0 {
                self.step = Step::Report;
                return Err((EINVAL, buf));
            }
            self.step = Step::Writing(n, index);
            let flags = AioOp::Write(WriteFlags::default());
            return aio
                .submit(job, flags, &dests[..count], buf)
                .inspect_err(|_| {
                    self.result.write_failed.0 |=
                        index.iter().take(count).fold(0, |m, &i| m | 1 << i);
                    self.step = Step::Report;
                });
        }
        let step = (CHUNK_BYTES / 512) as u64;
        if self.done >= self.job.len {
            self.step = Step::Report;
            return Err((EINVAL, buf));
        }
        let n = (self.job.len - self.done).min(step);
        let dest = AioDest {
            dev: src,
            sector: from + self.done,
            bytes: 0..(n * 512) as usize,
        };
        self.step = Step::Reading(n);
        aio.submit(job, AioOp::Read, &[dest], buf).inspect_err(|_| {
            self.result.read_failed = true;
            self.step = Step::Report;
        })
    }

    /// The chunk I/O ended with `errors`: after a read, writes the chunk
    /// to every destination still working; after a write, notes the failed
    /// ones and moves on.
    fn chunk_ended(&mut self, errors: DestErrors) {
        match self.step {
            Step::Reading(_) if errors.any() => {
                self.result.read_failed = true;
                self.step = Step::Report;
            }
            Step::Reading(n) => self.step = Step::Write(n),
            Step::Writing(n, index) => {
                for (k, &i) in index.iter().enumerate() {
                    if errors.failed(k) {
                        self.result.write_failed.0 |= 1 << i;
                    }
                }
                self.done += n;
                self.step = Step::Read;
            }
            Step::Read | Step::Write(_) | Step::Report => {}
        }
    }
}
