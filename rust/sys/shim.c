// SPDX-License-Identifier: GPL-2.0
/*
 * C half of vblk's abstraction layer.
 *
 * It holds what is simplest and safest in C: static initialisers that name
 * THIS_MODULE and generic helpers (the control device's file_operations),
 * and static inline kernel helpers that Rust cannot call directly. Every
 * function here is a thin, logic-free wrapper; the Rust side (rust/sys)
 * documents the safety contract of each.
 */
#include <linux/capability.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>

#include "shim.h"

/* Set before misc_register() publishes the device, constant afterwards. */
static vblk_control_fn vblk_control_handler;
static const void *vblk_control_ctx;

static long vblk_control_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	return vblk_control_handler(vblk_control_ctx, cmd, arg);
}

static const struct file_operations vblk_control_fops = {
	.owner = THIS_MODULE,
	.open = nonseekable_open,
	.llseek = noop_llseek,
	.unlocked_ioctl = vblk_control_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

/* /dev/vblk-control: root-only, like /dev/mapper/control. */
static struct miscdevice vblk_control_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "vblk-control",
	.nodename = "vblk-control",
	.mode = 0600,
	.fops = &vblk_control_fops,
};

int vblk_shim_control_register(vblk_control_fn handler, const void *ctx)
{
	vblk_control_handler = handler;
	vblk_control_ctx = ctx;
	return misc_register(&vblk_control_misc);
}

void vblk_shim_control_deregister(void)
{
	misc_deregister(&vblk_control_misc);
}

void vblk_shim_cond_resched(void)
{
	cond_resched();
}

bool vblk_shim_module_get(void)
{
	return try_module_get(THIS_MODULE);
}

void vblk_shim_module_put(void)
{
	module_put(THIS_MODULE);
}

bool vblk_shim_capable_sys_admin(void)
{
	return capable(CAP_SYS_ADMIN);
}

/* ---- events ---- */
#include <linux/wait_bit.h>

int vblk_shim_event_wait(u32 *counter, u32 seen)
{
	return wait_var_event_interruptible(counter, READ_ONCE(*counter) != seen);
}

void vblk_shim_event_wake(u32 *counter)
{
	wake_up_var(counter);
}

/* ---- lower block devices ---- */
#include <linux/blkdev.h>
#include <linux/bio.h>
#include <linux/blk-mq.h>
#include <linux/slab.h>
#include <linux/highmem.h>
#include <linux/gcd.h>
#include <linux/jiffies.h>
#include <linux/lcm.h>
#include <linux/mempool.h>
#include <linux/random.h>
#include <linux/workqueue.h>
#include <linux/vmalloc.h>
#include <linux/mm.h>
#include <linux/sched/mm.h>

/*
 * One holder for every lower device vblk opens, like device-mapper's
 * _dm_claim_ptr: two vblk tables may share a lower device (and a reload
 * can open what the old table still holds), while everyone else who wants
 * the device exclusively (mkfs, mount, another driver) gets EBUSY.
 */
static char vblk_holder;

struct file *vblk_shim_bdev_open(const char *path, u32 dev, int *err)
{
	const blk_mode_t mode = BLK_OPEN_READ | BLK_OPEN_WRITE;
	struct file *f;

	if (path)
		f = bdev_file_open_by_path(path, mode, &vblk_holder, NULL);
	else
		f = bdev_file_open_by_dev(dev, mode, &vblk_holder, NULL);
	if (IS_ERR(f)) {
		*err = PTR_ERR(f);
		return NULL;
	}
	return f;
}

void vblk_shim_bdev_close(struct file *f)
{
	bdev_fput(f);
}

u32 vblk_shim_bdev_devt(struct file *f)
{
	return file_bdev(f)->bd_dev;
}

u64 vblk_shim_bdev_sectors(struct file *f)
{
	return bdev_nr_sectors(file_bdev(f));
}

u32 vblk_shim_bdev_logical_block_size(struct file *f)
{
	return bdev_logical_block_size(file_bdev(f));
}

bool vblk_shim_bdev_discard(struct file *f)
{
	return bdev_max_discard_sectors(file_bdev(f)) != 0;
}

bool vblk_shim_bdev_write_zeroes(struct file *f)
{
	return bdev_write_zeroes_sectors(file_bdev(f)) != 0;
}

void vblk_shim_bdev_name(struct file *f, char *buf, u32 len)
{
	snprintf(buf, len, "%pg", file_bdev(f));
}

int vblk_shim_bdev_flush(struct file *f)
{
	return blkdev_issue_flush(file_bdev(f));
}

int vblk_shim_bdev_rw(struct file *f, u64 sector, void *buf, u32 len, u32 flags)
{
	blk_opf_t opf = (flags & VBLK_RW_WRITE) ? REQ_OP_WRITE | REQ_SYNC : REQ_OP_READ;
	bool vmalloced = is_vmalloc_addr(buf);
	unsigned int pages;
	struct bio *bio;
	u32 done = 0;
	int ret;

	if (len % SECTOR_SIZE || len > VBLK_RW_MAX_BYTES || (!len && !(flags & VBLK_RW_PREFLUSH)))
		return -EINVAL;
	if (flags & VBLK_RW_PREFLUSH)
		opf |= REQ_PREFLUSH;
	if (flags & VBLK_RW_FUA)
		opf |= REQ_FUA;
	pages = DIV_ROUND_UP(offset_in_page(buf) + len, PAGE_SIZE);
	bio = bio_alloc(file_bdev(f), pages, opf, GFP_NOIO);
	bio->bi_iter.bi_sector = sector;
	while (done < len) {
		void *at = buf + done;
		u32 n = min_t(u32, len - done, PAGE_SIZE - offset_in_page(at));
		struct page *page = vmalloced ? vmalloc_to_page(at) : virt_to_page(at);

		if (bio_add_page(bio, page, n, offset_in_page(at)) != n) {
			bio_put(bio);
			return -EIO;
		}
		done += n;
	}
	ret = submit_bio_wait(bio);
	bio_put(bio);
	return ret;
}

/* ---- queue limits ---- */

struct queue_limits *vblk_shim_limits_new(void)
{
	struct queue_limits *lim = kmalloc(sizeof(*lim), GFP_KERNEL);

	if (lim)
		blk_set_stacking_limits(lim);
	return lim;
}

void vblk_shim_limits_free(struct queue_limits *lim)
{
	kfree(lim);
}

bool vblk_shim_limits_stack(struct queue_limits *lim, struct file *f, u64 offset)
{
	struct block_device *bdev = file_bdev(f);

	return blk_stack_limits(lim, &bdev_get_queue(bdev)->limits,
				get_start_sect(bdev) + offset) == 0;
}

void vblk_shim_limits_discard(struct queue_limits *lim, bool supported)
{
	if (!supported) {
		lim->max_hw_discard_sectors = 0;
		lim->discard_granularity = 0;
		lim->discard_alignment = 0;
	} else if (!lim->max_hw_discard_sectors) {
		/* Nothing below limits it (zero, error): any size, any sector. */
		lim->max_hw_discard_sectors = UINT_MAX;
		lim->discard_granularity = 512;
	}
	/* A request must cover one contiguous range (see rust/sys/disk.rs). */
	lim->max_discard_segments = 1;
}

void vblk_shim_limits_write_zeroes(struct queue_limits *lim, bool supported)
{
	if (!supported)
		lim->max_write_zeroes_sectors = 0;
}

u32 vblk_shim_limits_logical_block_size(const struct queue_limits *lim)
{
	return lim->logical_block_size;
}

void vblk_shim_limits_block_size(struct queue_limits *lim, u32 bytes)
{
	if (!is_power_of_2(bytes) || bytes < SECTOR_SIZE || bytes > PAGE_SIZE)
		return;
	lim->logical_block_size = max(lim->logical_block_size, bytes);
	lim->physical_block_size = max(lim->physical_block_size, lim->logical_block_size);
	lim->io_min = max(lim->io_min, lim->physical_block_size);
	lim->dma_alignment = max(lim->dma_alignment, bytes - 1);
}

void vblk_shim_limits_io_hints(struct queue_limits *lim, u32 chunk_sectors, u32 io_min,
			       u32 io_opt)
{
	if (chunk_sectors) {
		u32 c = lim->chunk_sectors ? gcd(lim->chunk_sectors, chunk_sectors) : chunk_sectors;

		if (c % (lim->physical_block_size >> SECTOR_SHIFT) == 0)
			lim->chunk_sectors = c;
	}
	lim->io_min = max(lim->io_min, io_min);
	if (io_opt)
		lim->io_opt = lim->io_opt ? lcm(lim->io_opt, io_opt) : io_opt;
}

/* ---- blk-mq disks ---- */

struct vblk_disk {
	struct blk_mq_tag_set set;
	struct gendisk *disk;
	/* Lower bios: clones of request bios, bounce writes, empty flushes. */
	struct bio_set bs;
	/*
	 * Deferred request completion (ops->finish) and deferred mapping
	 * (ops->queue_rq from a worker), both usable under reclaim. Two
	 * queues: a mapping that waits (a mirror write behind a region copy)
	 * must never hold up the completions that end the wait, which under
	 * memory pressure one queue's single rescuer would.
	 */
	struct workqueue_struct *done_wq;
	struct workqueue_struct *map_wq;
	/* Where struct vblk_rq_work sits in each request's PDU. */
	u32 work_off;
	/* The N of vblkN: what the control plane knows the device by. */
	u32 index;
	const struct vblk_disk_ops *ops;
	const void *ctx;
	/* Woken as requests end, for vblk_shim_disk_wait_idle. */
	wait_queue_head_t idle_wait;
	/* Set under disk->open_mutex once removal is decided: opens fail. */
	bool dying;
	/*
	 * The lock class of this disk's flush queue lock. A lower device
	 * (null_blk, another vblk disk, ...) completes our requests from
	 * inside its own flush completion, holding its own mq_flush_lock, and
	 * ending a request of our flush sequence takes ours: one class per
	 * disk keeps lockdep from taking that for recursion (nvme-loop does
	 * the same with one class; stacks of vblk disks need one each, and a
	 * class that dies with its disk leaves no stale ordering behind).
	 */
	struct lock_class_key fq_key;
};

/* What sits in front of every lower bio (the bio_set's front_pad). */
struct vblk_lower {
	struct request *rq;
	u64 tag;
	/* Bounce writes: the pool the bio's pages go back to; else NULL. */
	struct vblk_pool *pool;
	struct bio bio;
};

/*
 * After Rust's part of each request's PDU: a deferred mapping and a
 * deferred completion, separate items (the completion may be queued
 * from inside the mapping's own work function).
 */
struct vblk_rq_work {
	struct work_struct map;
	struct work_struct done;
	struct request *rq;
};

/* Pages per bounce bio at most (a bio's page array lives on the stack). */
#define VBLK_POOL_MAX_PAGES 64

/* A page reserve for bounce writes (see vblk_shim_rq_bounce_write). */
struct vblk_pool {
	mempool_t *pages;
	/* Serialises waiting on the reserve, so waiters never split it. */
	struct mutex wait_lock;
	u32 max_pages;
};

/*
 * The limits a table computed, as the disk gets them: blk-mq's own
 * features added, and no zoned-device limits (vblk disks are not zoned;
 * a table without lower devices would otherwise keep the stacking
 * default, which the block layer refuses).
 *
 * Request size and shape limits (sectors, segments, segment size, gaps)
 * are not taken from below: vblk hands its lower devices bios, which each
 * lower device splits to its own limits on submission, as it does for
 * device-mapper's bios. Keeping, say, brd's 255-sector default here would
 * cut every 128 KiB request in two before it reached vblk.
 */
static struct queue_limits vblk_disk_limits(const struct queue_limits *lim)
{
	struct queue_limits l = *lim;

	l.max_hw_sectors = UINT_MAX;
	l.max_sectors = 0;
	l.max_user_sectors = 0;
	l.max_segments = USHRT_MAX;
	l.max_segment_size = UINT_MAX;
	l.virt_boundary_mask = 0;
	l.seg_boundary_mask = BLK_SEG_BOUNDARY_MASK;

	l.features |= BLK_FEAT_IO_STAT | BLK_FEAT_NOWAIT;
	l.features &= ~(BLK_FEAT_ZONED | BLK_FEAT_POLL);
	l.max_zone_append_sectors = 0;
	l.max_open_zones = 0;
	l.max_active_zones = 0;
	l.zone_write_granularity = 0;
	return l;
}

static blk_status_t vblk_mq_queue_rq(struct blk_mq_hw_ctx *hctx,
				     const struct blk_mq_queue_data *bd)
{
	struct vblk_disk *d = hctx->queue->queuedata;
	struct blk_plug *outer = current->plug;

	blk_mq_start_request(bd->rq);
	/*
	 * queue_rq is often reached from the flush of the submitter's plug.
	 * Lower bios submitted now must not join that plug while blk-mq is
	 * walking it: set it aside, so they are issued as they come (a plug
	 * of our own per request batched nothing and cost a flush each time).
	 */
	current->plug = NULL;
	d->ops->queue_rq(d->ctx, bd->rq, false);
	current->plug = outer;
	return BLK_STS_OK;
}

/*
 * A batch from the submitter's plug (io_uring and the page cache submit
 * many at once). The lower bios of the whole batch go into a plug of our
 * own, flushed once at the end, so the devices below get them as a batch
 * too (dm's clones join the submitter's plug the same way). Sleeping here
 * (allocation) flushes that plug first, as any plugged submitter's does.
 */
static void vblk_mq_queue_rqs(struct rq_list *rqlist)
{
	struct blk_plug *outer = current->plug;
	struct blk_plug plug;
	struct request *rq;

	current->plug = NULL;
	blk_start_plug(&plug);
	while ((rq = rq_list_pop(rqlist))) {
		struct vblk_disk *d = rq->q->queuedata;

		blk_mq_start_request(rq);
		d->ops->queue_rq(d->ctx, rq, false);
	}
	blk_finish_plug(&plug);
	current->plug = outer;
}

static int vblk_mq_init_hctx(struct blk_mq_hw_ctx *hctx, void *data, unsigned int idx)
{
	struct vblk_disk *d = data;

	blk_mq_hctx_set_fq_lock_class(hctx, &d->fq_key);
	return 0;
}

static const struct blk_mq_ops vblk_mq_ops = {
	.queue_rq = vblk_mq_queue_rq,
	.queue_rqs = vblk_mq_queue_rqs,
	.init_hctx = vblk_mq_init_hctx,
};

/* Called with disk->open_mutex held, like the removal claim below. */
static int vblk_bdev_open(struct gendisk *disk, blk_mode_t mode)
{
	struct vblk_disk *d = disk->private_data;

	return d->dying ? -ENXIO : 0;
}

static const struct block_device_operations vblk_bdev_ops = {
	.owner = THIS_MODULE,
	.open = vblk_bdev_open,
};

struct vblk_disk *vblk_shim_disk_create(const struct vblk_disk_ops *ops, const void *ctx,
					unsigned int index, u64 sectors,
					struct queue_limits *lim, u32 pdu_size, int *err)
{
	struct queue_limits l = vblk_disk_limits(lim);
	struct vblk_disk *d;
	int ret;

	d = kzalloc(sizeof(*d), GFP_KERNEL);
	if (!d) {
		*err = -ENOMEM;
		return NULL;
	}
	d->ops = ops;
	d->ctx = ctx;
	d->work_off = ALIGN(pdu_size, __alignof__(struct vblk_rq_work));
	init_waitqueue_head(&d->idle_wait);
	lockdep_register_key(&d->fq_key);
	/*
	 * The per-cpu cache serves clones of bios that ask for it
	 * (REQ_ALLOC_CACHE, e.g. io_uring's) without touching the mempool.
	 */
	ret = bioset_init(&d->bs, 64, offsetof(struct vblk_lower, bio),
			  BIOSET_NEED_BVECS | BIOSET_NEED_RESCUER | BIOSET_PERCPU_CACHE);
	if (ret)
		goto free_d;
	d->index = index;
	d->done_wq = alloc_workqueue("vblk%u", WQ_MEM_RECLAIM | WQ_UNBOUND, 0, index);
	if (!d->done_wq) {
		ret = -ENOMEM;
		goto free_bs;
	}
	d->map_wq = alloc_workqueue("vblk%u_map", WQ_MEM_RECLAIM | WQ_UNBOUND, 0, index);
	if (!d->map_wq) {
		ret = -ENOMEM;
		goto free_done_wq;
	}

	d->set.ops = &vblk_mq_ops;
	d->set.driver_data = d;
	d->set.nr_hw_queues = 1;
	d->set.queue_depth = 128;
	d->set.numa_node = NUMA_NO_NODE;
	d->set.cmd_size = d->work_off + sizeof(struct vblk_rq_work);
	/*
	 * queue_rq sleeps: it allocates and submits lower bios. No I/O
	 * scheduler by default: the devices below schedule their own I/O
	 * (a stacked elevator only adds latency, and takes plugged requests
	 * off the direct-issue path).
	 */
	d->set.flags = BLK_MQ_F_BLOCKING | BLK_MQ_F_STACKING | BLK_MQ_F_NO_SCHED_BY_DEFAULT;
	ret = blk_mq_alloc_tag_set(&d->set);
	if (ret)
		goto free_wq;

	d->disk = blk_mq_alloc_disk(&d->set, &l, d);
	if (IS_ERR(d->disk)) {
		ret = PTR_ERR(d->disk);
		goto free_set;
	}
	d->disk->fops = &vblk_bdev_ops;
	d->disk->private_data = d;
	d->disk->flags |= GENHD_FL_NO_PART;
	snprintf(d->disk->disk_name, DISK_NAME_LEN, "vblk%u", index);
	set_capacity(d->disk, sectors);
	ret = add_disk(d->disk);
	if (ret)
		goto put;
	return d;

put:
	put_disk(d->disk);
free_set:
	blk_mq_free_tag_set(&d->set);
free_wq:
	destroy_workqueue(d->map_wq);
free_done_wq:
	destroy_workqueue(d->done_wq);
free_bs:
	bioset_exit(&d->bs);
free_d:
	lockdep_unregister_key(&d->fq_key);
	kfree(d);
	*err = ret;
	return NULL;
}

void vblk_shim_disk_destroy(struct vblk_disk *d)
{
	/* Waits for every request, so every lower bio, to finish. */
	del_gendisk(d->disk);
	put_disk(d->disk);
	blk_mq_free_tag_set(&d->set);
	/* Deferred work ended its requests: nothing is queued. */
	destroy_workqueue(d->map_wq);
	destroy_workqueue(d->done_wq);
	bioset_exit(&d->bs);
	/* No request is left to take the flush lock of this class. */
	lockdep_unregister_key(&d->fq_key);
	kfree(d);
}

u32 vblk_shim_disk_devt(const struct vblk_disk *d)
{
	return disk_devt(d->disk);
}

/* The index of the vblk disk f is, or U32_MAX if it is not a vblk disk. */
u32 vblk_shim_bdev_vblk_index(struct file *f)
{
	struct gendisk *disk = file_bdev(f)->bd_disk;

	return disk->fops == &vblk_bdev_ops ? ((struct vblk_disk *)disk->private_data)->index : U32_MAX;
}

int vblk_shim_disk_openers(const struct vblk_disk *d)
{
	return atomic_read(&d->disk->part0->bd_openers);
}

/*
 * Decides removal atomically with respect to opens: -EBUSY if the disk is
 * open, else marks it dying so no open can succeed from now on.
 */
int vblk_shim_disk_claim_for_removal(struct vblk_disk *d)
{
	int ret = 0;

	mutex_lock(&d->disk->open_mutex);
	if (atomic_read(&d->disk->part0->bd_openers))
		ret = -EBUSY;
	else
		d->dying = true;
	mutex_unlock(&d->disk->open_mutex);
	return ret;
}

void vblk_shim_disk_set_capacity(struct vblk_disk *d, u64 sectors)
{
	set_capacity_and_notify(d->disk, sectors);
}

/* Call only with the queue quiesced and idle: no request may be in flight. */
int vblk_shim_disk_set_limits(struct vblk_disk *d, const struct queue_limits *lim)
{
	struct queue_limits l = vblk_disk_limits(lim);

	return queue_limits_set(d->disk->queue, &l);
}

u32 vblk_shim_disk_logical_block_size(const struct vblk_disk *d)
{
	return queue_logical_block_size(d->disk->queue);
}

/* Returns once no queue_rq runs; new requests wait in blk-mq (they do not fail). */
void vblk_shim_disk_quiesce(struct vblk_disk *d)
{
	blk_mq_quiesce_queue(d->disk->queue);
}

void vblk_shim_disk_unquiesce(struct vblk_disk *d)
{
	blk_mq_unquiesce_queue(d->disk->queue);
}

int vblk_shim_disk_wait_idle(struct vblk_disk *d)
{
	/*
	 * Requests wake us just before they end (see vblk_shim_rq_end), so
	 * look again every 10 ms rather than trusting the last wake-up.
	 */
	for (;;) {
		long ret = wait_event_interruptible_timeout(d->idle_wait,
					!blk_mq_queue_inflight(d->disk->queue),
					msecs_to_jiffies(10));
		if (ret < 0)
			return ret;
		if (ret > 0)
			return 0;
	}
}

/* ---- requests ---- */

static enum vblk_op vblk_rq_op(const struct request *rq)
{
	switch (req_op(rq)) {
	case REQ_OP_READ:
		return VBLK_OP_READ;
	case REQ_OP_WRITE:
		return VBLK_OP_WRITE;
	case REQ_OP_FLUSH:
		return VBLK_OP_FLUSH;
	case REQ_OP_DISCARD:
		return VBLK_OP_DISCARD;
	case REQ_OP_WRITE_ZEROES:
		return VBLK_OP_WRITE_ZEROES;
	default:
		return VBLK_OP_OTHER;
	}
}

static u32 vblk_rq_flags(const struct request *rq)
{
	u32 f = 0;

	if (rq->cmd_flags & REQ_FUA)
		f |= VBLK_RQ_FUA;
	if (rq->cmd_flags & REQ_PREFLUSH)
		f |= VBLK_RQ_PREFLUSH;
	if (rq->cmd_flags & REQ_SYNC)
		f |= VBLK_RQ_SYNC;
	if (rq->cmd_flags & REQ_RAHEAD)
		f |= VBLK_RQ_RAHEAD;
	return f;
}

void vblk_shim_rq_info(const struct request *rq, struct vblk_rq_info *info)
{
	info->op = vblk_rq_op(rq);
	info->flags = vblk_rq_flags(rq);
	info->opf = (__force u32)rq->cmd_flags;
	info->sectors = blk_rq_sectors(rq);
	info->pos = blk_rq_pos(rq);
}

void *vblk_shim_rq_pdu(struct request *rq)
{
	return blk_mq_rq_to_pdu(rq);
}

/*
 * A position in a request's data, for walking it once, in order: the bio
 * and the iterator inside it (segments come out one page at most).
 */
struct vblk_rq_cursor {
	struct bio *bio;
	struct bvec_iter it;
};

/* A cursor at byte off of the request's data (at the end if past it). */
static void vblk_rq_seek(struct request *rq, u64 off, struct vblk_rq_cursor *c)
{
	c->bio = rq->bio && bio_has_data(rq->bio) ? rq->bio : NULL;
	for (; c->bio; c->bio = c->bio->bi_next) {
		c->it = c->bio->bi_iter;
		if (off < c->it.bi_size) {
			bio_advance_iter(c->bio, &c->it, off);
			return;
		}
		off -= c->it.bi_size;
	}
}

enum vblk_xfer { VBLK_COPY_OUT, VBLK_COPY_IN, VBLK_ZERO };

/* Copies out, copies in or zeroes up to len bytes at the cursor, and moves past them. */
static void vblk_rq_xfer(struct vblk_rq_cursor *c, u8 *buf, u64 len, enum vblk_xfer how)
{
	while (len && c->bio) {
		struct bio_vec bv = bio_iter_iovec(c->bio, c->it);
		u32 n = min_t(u64, bv.bv_len, len);

		bv.bv_len = n;
		if (how == VBLK_COPY_OUT)
			memcpy_from_bvec(buf, &bv);
		else if (how == VBLK_COPY_IN)
			memcpy_to_bvec(&bv, buf);
		else
			memzero_bvec(&bv);
		if (buf)
			buf += n;
		len -= n;
		bio_advance_iter_single(c->bio, &c->it, n);
		if (!c->it.bi_size) {
			c->bio = c->bio->bi_next;
			if (c->bio)
				c->it = c->bio->bi_iter;
		}
	}
}

void vblk_shim_rq_zero_range(struct request *rq, u64 skip, u64 len)
{
	struct vblk_rq_cursor c;

	vblk_rq_seek(rq, skip << SECTOR_SHIFT, &c);
	vblk_rq_xfer(&c, NULL, len << SECTOR_SHIFT, VBLK_ZERO);
}

void vblk_shim_rq_copy(struct request *rq, u64 off, u8 *buf, u32 len, bool to_rq)
{
	struct vblk_rq_cursor c;

	vblk_rq_seek(rq, off, &c);
	vblk_rq_xfer(&c, buf, len, to_rq ? VBLK_COPY_IN : VBLK_COPY_OUT);
}

void vblk_shim_rq_visit(struct request *rq, u64 off, u64 len, vblk_fill_fn fn, void *ctx)
{
	struct vblk_rq_cursor c;
	u64 done = 0;

	vblk_rq_seek(rq, off, &c);
	while (done < len && c.bio) {
		struct bio_vec bv = bio_iter_iovec(c.bio, c.it);
		u32 n = min_t(u64, bv.bv_len, len - done);
		u8 *p = bvec_kmap_local(&bv);

		fn(ctx, done, p, n);
		kunmap_local(p);
		flush_dcache_page(bv.bv_page);
		done += n;
		bio_advance_iter_single(c.bio, &c.it, n);
		if (!c.it.bi_size) {
			c.bio = c.bio->bi_next;
			if (c.bio)
				c.it = c.bio->bi_iter;
		}
	}
}

static void vblk_lower_endio(struct bio *bio)
{
	struct vblk_lower *l = container_of(bio, struct vblk_lower, bio);
	struct request *rq = l->rq;
	struct vblk_disk *d = rq->q->queuedata;
	u64 tag = l->tag;
	blk_status_t status = bio->bi_status;

	if (l->pool) {
		struct bvec_iter_all it;
		struct bio_vec *bv;

		bio_for_each_segment_all(bv, bio, it)
			mempool_free(bv->bv_page, l->pool->pages);
	}
	bio_put(bio);
	d->ops->lower_done(rq, tag, (__force u8)status);
}

static void vblk_lower_submit(struct request *rq, struct bio *bio, u64 tag,
			      struct vblk_pool *pool)
{
	struct vblk_lower *l = container_of(bio, struct vblk_lower, bio);

	l->rq = rq;
	l->tag = tag;
	l->pool = pool;
	bio->bi_end_io = vblk_lower_endio;
	/* The request is accepted: below it, vblk may wait (BLOCKING queue). */
	bio->bi_opf &= ~(REQ_NOWAIT | REQ_POLLED);
	/* Counted before submission: the bio may complete inside submit. */
	atomic_inc((atomic_t *)blk_mq_rq_to_pdu(rq));
	submit_bio_noacct(bio);
}

u32 vblk_shim_rq_clone(struct request *rq, u64 skip, u64 len, struct file *f,
		       u64 sector, u64 tag)
{
	struct vblk_disk *d = rq->q->queuedata;
	struct block_device *bdev = file_bdev(f);
	struct bio *bio;
	u64 pos = 0;
	u32 count = 0;

	__rq_for_each_bio(bio, rq) {
		u64 n = bio_sectors(bio), from, to;
		struct bio *clone;

		from = max(pos, skip);
		to = min(pos + n, skip + len);
		if (from < to) {
			/* GFP_NOIO from a mempool: waits, never fails. */
			clone = bio_alloc_clone(bdev, bio, GFP_NOIO, &d->bs);
			bio_trim(clone, from - pos, to - from);
			clone->bi_iter.bi_sector = sector + (from - skip);
			vblk_lower_submit(rq, clone, tag, NULL);
			count++;
		}
		pos += n;
		if (pos >= skip + len)
			break;
	}
	return count;
}

void vblk_shim_rq_range(struct request *rq, struct file *f, u64 sector, u32 len, u64 tag)
{
	struct vblk_disk *d = rq->q->queuedata;
	struct bio *bio;

	bio = bio_alloc_bioset(file_bdev(f), 0, req_op(rq) | (rq->cmd_flags & REQ_NOUNMAP),
			       GFP_NOIO, &d->bs);
	bio->bi_iter.bi_sector = sector;
	bio->bi_iter.bi_size = len << SECTOR_SHIFT;
	vblk_lower_submit(rq, bio, tag, NULL);
}

void vblk_shim_rq_flush(struct request *rq, struct file *f, u64 tag)
{
	struct vblk_disk *d = rq->q->queuedata;
	struct bio *bio;

	bio = bio_alloc_bioset(file_bdev(f), 0, REQ_OP_WRITE | REQ_PREFLUSH | REQ_SYNC,
			       GFP_NOIO, &d->bs);
	vblk_lower_submit(rq, bio, tag, NULL);
}

void vblk_shim_rq_end(struct request *rq, u8 status)
{
	struct vblk_disk *d = rq->q->queuedata;

	/*
	 * Wake the idle waiter before the end it waits for: once the request
	 * has ended, the disk may be deleted and d freed. The waiter looks
	 * again within 10 ms.
	 */
	if (wq_has_sleeper(&d->idle_wait))
		wake_up(&d->idle_wait);
	blk_mq_end_request(rq, (__force blk_status_t)status);
}

static void vblk_rq_work_fn(struct work_struct *work)
{
	struct vblk_rq_work *w = container_of(work, struct vblk_rq_work, done);
	struct request *rq = w->rq;
	struct vblk_disk *d = rq->q->queuedata;

	d->ops->finish(d->ctx, rq);
}

static void vblk_rq_map_work_fn(struct work_struct *work)
{
	struct vblk_rq_work *w = container_of(work, struct vblk_rq_work, map);
	struct request *rq = w->rq;
	struct vblk_disk *d = rq->q->queuedata;

	d->ops->queue_rq(d->ctx, rq, true);
}

static struct vblk_rq_work *vblk_rq_work(struct request *rq)
{
	struct vblk_disk *d = rq->q->queuedata;
	struct vblk_rq_work *w = blk_mq_rq_to_pdu(rq) + d->work_off;

	w->rq = rq;
	return w;
}

void vblk_shim_rq_defer_map(struct request *rq)
{
	struct vblk_rq_work *w = vblk_rq_work(rq);

	INIT_WORK(&w->map, vblk_rq_map_work_fn);
	queue_work(((struct vblk_disk *)rq->q->queuedata)->map_wq, &w->map);
}

void vblk_shim_rq_defer(struct request *rq)
{
	struct vblk_rq_work *w = vblk_rq_work(rq);

	INIT_WORK(&w->done, vblk_rq_work_fn);
	queue_work(((struct vblk_disk *)rq->q->queuedata)->done_wq, &w->done);
}

/* ---- bounce pages ---- */

struct vblk_pool *vblk_shim_pool_new(u32 max_pages)
{
	struct vblk_pool *p = kzalloc(sizeof(*p), GFP_KERNEL);

	if (!p)
		return NULL;
	p->max_pages = clamp_t(u32, max_pages, 1, VBLK_POOL_MAX_PAGES);
	p->pages = mempool_create_page_pool(p->max_pages, 0);
	if (!p->pages) {
		kfree(p);
		return NULL;
	}
	mutex_init(&p->wait_lock);
	return p;
}

void vblk_shim_pool_free(struct vblk_pool *p)
{
	mempool_destroy(p->pages);
	mutex_destroy(&p->wait_lock);
	kfree(p);
}

/*
 * nr pages for one bio: first without waiting; if memory is short, give
 * back what we got and wait on the reserve under the pool's lock, so two
 * writers never each hold half of it (dm-crypt's rule). Every bio needs at
 * most max_pages, which the reserve always holds once I/O drains.
 */
static void vblk_pool_get(struct vblk_pool *p, struct page **pages, u32 nr)
{
	u32 i;

	for (i = 0; i < nr; i++) {
		pages[i] = mempool_alloc(p->pages, GFP_NOWAIT | __GFP_NOWARN);
		if (!pages[i])
			break;
	}
	if (i == nr)
		return;
	while (i)
		mempool_free(pages[--i], p->pages);
	mutex_lock(&p->wait_lock);
	for (i = 0; i < nr; i++)
		pages[i] = mempool_alloc(p->pages, GFP_NOIO);
	mutex_unlock(&p->wait_lock);
}

u32 vblk_shim_rq_bounce_write(struct request *rq, struct vblk_pool *pool, u64 skip, u64 len,
			      struct file *f, u64 sector, u64 tag, vblk_fill_fn fill, void *ctx)
{
	struct vblk_disk *d = rq->q->queuedata;
	struct block_device *bdev = file_bdev(f);
	blk_opf_t opf = REQ_OP_WRITE | (rq->cmd_flags & (REQ_FUA | REQ_SYNC | REQ_META | REQ_PRIO));
	u64 bytes = min_t(u64, len, blk_rq_sectors(rq) - min_t(u64, skip, blk_rq_sectors(rq))) << SECTOR_SHIFT;
	struct page *pages[VBLK_POOL_MAX_PAGES];
	struct vblk_rq_cursor c;
	u64 done = 0;
	u32 count = 0;

	/* One walk over the request's data for the whole range. */
	vblk_rq_seek(rq, skip << SECTOR_SHIFT, &c);
	while (done < bytes) {
		u32 nr = min_t(u64, DIV_ROUND_UP(bytes - done, PAGE_SIZE), pool->max_pages);
		struct bio *bio;
		u32 i;

		bio = bio_alloc_bioset(bdev, nr, opf, GFP_NOIO, &d->bs);
		bio->bi_iter.bi_sector = sector + (done >> SECTOR_SHIFT);
		vblk_pool_get(pool, pages, nr);
		for (i = 0; i < nr; i++) {
			u32 n = min_t(u64, bytes - done, PAGE_SIZE);
			u8 *buf = kmap_local_page(pages[i]);

			vblk_rq_xfer(&c, buf, n, VBLK_COPY_OUT);
			fill(ctx, done, buf, n);
			kunmap_local(buf);
			__bio_add_page(bio, pages[i], n, 0);
			done += n;
		}
		vblk_lower_submit(rq, bio, tag, pool);
		count++;
	}
	return count;
}

/* ---- workqueues owned by targets, allocation scopes ---- */

struct workqueue_struct *vblk_shim_wq_alloc(const char *name)
{
	return alloc_workqueue("%s", WQ_MEM_RECLAIM | WQ_UNBOUND, 0, name);
}

void vblk_shim_wq_flush(struct workqueue_struct *wq)
{
	flush_workqueue(wq);
}

void vblk_shim_wq_destroy(struct workqueue_struct *wq)
{
	destroy_workqueue(wq);
}

unsigned int vblk_shim_noio_save(void)
{
	return memalloc_noio_save();
}

void vblk_shim_noio_restore(unsigned int flags)
{
	memalloc_noio_restore(flags);
}

/* ---- time and randomness ---- */

u64 vblk_shim_uptime_ms(void)
{
	return jiffies64_to_msecs(get_jiffies_64());
}

u64 vblk_shim_random_u64(void)
{
	return get_random_u64();
}

/* ---- symmetric ciphers ---- */

#include <crypto/skcipher.h>
#include <linux/scatterlist.h>

struct vblk_cipher {
	struct crypto_skcipher *tfm;
	/* Requests for tfm (its request size), so I/O never fails on memory. */
	mempool_t *reqs;
};

struct vblk_cipher *vblk_shim_cipher_alloc(const char *name, int *err)
{
	struct vblk_cipher *c = kzalloc(sizeof(*c), GFP_KERNEL);

	if (!c) {
		*err = -ENOMEM;
		return NULL;
	}
	/*
	 * Any implementation that does not allocate memory per request (it
	 * runs on the I/O path, where an allocation could wait on the very
	 * I/O it is part of), synchronous or not: the SIMD ones (AES-NI, ...)
	 * are registered as asynchronous but run inline in process context.
	 */
	c->tfm = crypto_alloc_skcipher(name, 0, CRYPTO_ALG_ALLOCATES_MEMORY);
	if (IS_ERR(c->tfm)) {
		*err = PTR_ERR(c->tfm);
		kfree(c);
		return NULL;
	}
	c->reqs = mempool_create_kmalloc_pool(4, sizeof(struct skcipher_request) +
							crypto_skcipher_reqsize(c->tfm));
	if (!c->reqs) {
		crypto_free_skcipher(c->tfm);
		kfree(c);
		*err = -ENOMEM;
		return NULL;
	}
	return c;
}

void vblk_shim_cipher_free(struct vblk_cipher *c)
{
	mempool_destroy(c->reqs);
	crypto_free_skcipher(c->tfm);
	kfree(c);
}

int vblk_shim_cipher_setkey(struct vblk_cipher *c, const u8 *key, u32 len)
{
	return crypto_skcipher_setkey(c->tfm, key, len);
}

u32 vblk_shim_cipher_ivsize(struct vblk_cipher *c)
{
	return crypto_skcipher_ivsize(c->tfm);
}

u32 vblk_shim_cipher_blocksize(struct vblk_cipher *c)
{
	return crypto_skcipher_blocksize(c->tfm);
}

struct skcipher_request *vblk_shim_cipher_req_get(struct vblk_cipher *c)
{
	struct skcipher_request *req = mempool_alloc(c->reqs, GFP_NOIO);

	skcipher_request_set_tfm(req, c->tfm);
	return req;
}

void vblk_shim_cipher_req_put(struct vblk_cipher *c, struct skcipher_request *req)
{
	skcipher_request_zero(req);
	mempool_free(req, c->reqs);
}

int vblk_shim_cipher_crypt(struct vblk_cipher *c, struct skcipher_request *req, u8 *iv, u8 *buf,
			   u32 len, bool encrypt)
{
	DECLARE_CRYPTO_WAIT(wait);
	struct scatterlist sg;

	if (!len)
		return 0;
	if (!virt_addr_valid(buf) || !virt_addr_valid(buf + len - 1))
		return -EFAULT;
	sg_init_one(&sg, buf, len);
	skcipher_request_set_callback(req, CRYPTO_TFM_REQ_MAY_BACKLOG, crypto_req_done, &wait);
	skcipher_request_set_crypt(req, &sg, &sg, len, iv);
	return crypto_wait_req(encrypt ? crypto_skcipher_encrypt(req) : crypto_skcipher_decrypt(req),
			       &wait);
}
